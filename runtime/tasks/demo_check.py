"""The demo model's own check: the sample plate it reads, the fields its model card says it
reads reliably, and a field-by-field comparison (``glmv demo`` and the self-test)."""
from __future__ import annotations

import json
from pathlib import Path

from runtime.common.manifest import MANIFEST_NAME, Manifest
from runtime.common.paths import resources_dir
from runtime.engine.model_locator import demo_model_manifest

SAMPLE_NAME = "plate-en-metal"            # the sample plate the demo and the self-test read


def sample_plate() -> tuple[Path, dict]:
    """The sample photo the demo reads, and its ground truth (the generator's fields)."""
    d = resources_dir() / "assets" / "samples"
    truth = json.loads((d / f"{SAMPLE_NAME}.json").read_text(encoding="utf-8"))["fields"]
    return d / f"{SAMPLE_NAME}.jpg", truth


def checked_fields(manifest: Manifest | dict | None = None) -> list[str]:
    """The fields the self-test holds the demo model to: those its model card reports it reads
    reliably on held-out plates (``manifest["checked_fields"]``). ``manifest``: the demo model's
    (the default), or one already read — a Manifest, or its JSON object (``demo_manifest()``)."""
    if isinstance(manifest, dict):
        manifest = Manifest(MANIFEST_NAME, manifest)
    m = manifest if manifest is not None else demo_model_manifest()
    return m.checked_fields if m is not None else []


def compare(reading: dict, truth: dict, fields: list[str]) -> dict[str, dict]:
    """Per field: what was read, what is printed, and whether they are the same."""
    return {k: {"read": reading.get(k), "truth": truth.get(k), "ok": reading.get(k) == truth.get(k)} for k in fields}
