"""Synthetic GLM-4.6V-Flash checkpoint in the exact Hugging Face release layout.

The real weights cannot be downloaded here, so the converter, runtime and
benchmarks are exercised against a checkpoint that has the same file layout,
config dialects, tensor names, shapes and dtype (BF16) as the
`Glm4vForConditionalGeneration` release, filled with seeded random values, plus a
small byte-level BPE tokenizer (GLM-4 pre-tokenizer, GLM special tokens) and a
GLM-4.6V style chat template.  Only the stdlib and numpy are used, so this can
ship with the product.

    python -m convert.synthetic.synth OUT_DIR --size tiny|medium|full --seed 0 --dialect v5|v4|release

``--dialect release`` follows the real download's formats rather than ours (the exporter's config
dialect, unflagged box/think tokens, the GLM-4.6V family template, the model card's sampling
defaults): see convert/synthetic/synth_release.py.

The checkpoint is assembled here (``make_checkpoint``, the CLI) from its parts: the tokenizer and
chat template (convert/synthetic/synth_tokenizer.py), the sizes, tensor table and config dialects
(synth_spec.py) and the seeded BF16 weights (synth_weights.py). Their public names are re-exported
from this module, which the rest of the project imports.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from convert.synthetic.lab_files import fsync_dir as _fsync_dir
from convert.synthetic.lab_files import write_json as _write_json
from convert.synthetic.synth_spec import (DIALECTS, MERGE, PARTIAL_ROTARY, PATCH, PREPROCESSOR_CONFIG, ROPE_THETA,
                                          SIZES, TEMPORAL_PATCH, SynthSpec, _vocab_size, build_config,
                                          tensor_table)
from convert.synthetic.synth_tokenizer import (CHAT_TEMPLATE, GLM4_REGEX, SPECIAL_TOKENS, Bpe, _bytes_to_unicode,
                                               _special_ids, _train_bpe, build_tokenizer_files)
from convert.synthetic.synth_weights import (_Progress, _split_shards, _write_safetensors, tensor_chunks,
                                             tensor_values, to_bf16)

# What other code reads from ``convert.synthetic.synth`` (the underscored names are used by the plate
# task, the trainer and the tests); listing them also tells pyflakes the re-exports are meant.
__all__ = [
    "SPECIAL_TOKENS", "GLM4_REGEX", "CHAT_TEMPLATE", "Bpe", "_bytes_to_unicode", "_train_bpe", "_special_ids",
    "build_tokenizer_files",
    "SynthSpec", "SIZES", "DIALECTS", "ROPE_THETA", "PARTIAL_ROTARY", "PATCH", "TEMPORAL_PATCH", "MERGE",
    "PREPROCESSOR_CONFIG", "_vocab_size", "tensor_table", "build_config",
    "to_bf16", "tensor_chunks", "tensor_values",
    "STAMP", "_write_json", "_fsync_dir", "make_checkpoint", "main",
]

STAMP = ".synth-complete.json"


def _is_complete(out: Path, stamp: dict) -> bool:
    try:
        return json.loads((out / STAMP).read_text()) == stamp
    except (OSError, ValueError):
        return False


def make_checkpoint(out_dir: str | Path, size: str = "tiny", seed: int = 0, dialect: str = "v5",
                    n_shards: int | None = None, progress: bool = False) -> Path:
    """Build (or reuse) a synthetic checkpoint at out_dir and return its path."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
    out, spec = Path(out_dir), SIZES[size]
    table = tensor_table(spec)
    total = sum(2 * int(np.prod(s)) for _, s, _ in table)
    n = n_shards or spec.default_shards or max(2, -(-total // (4 * 10**9)))
    stamp = {"size": size, "seed": seed, "dialect": dialect, "n_shards": n, "total_size": total}
    if _is_complete(out, stamp):
        return out
    # only a checkpoint this generator made (or an empty folder) is ever replaced: OUT could be a
    # real download or anybody's data
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / STAMP).is_file()):
        from convert.errors import ConversionError
        raise ConversionError(f"{out} exists and is not a synthetic checkpoint made by this tool: refusing to "
                              "replace it — choose another folder, or delete it first")

    # A whole folder is published, so it is staged beside OUT and renamed: the per-file atomic write
    # cannot make a set of files appear together (and the shards are streamed, see _write_safetensors).
    part = out.absolute().with_name(f"{out.absolute().name}.part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    try:
        _build(part, spec, dialect, table, total, n, seed, stamp, progress)
    except BaseException:   # interrupted, disk full...: nothing half-written stays behind
        shutil.rmtree(part, ignore_errors=True)
        raise

    if _is_complete(out, stamp):  # a concurrent builder won the race; its result is identical
        shutil.rmtree(part)
        return out
    if out.exists():
        old = part.with_name(f"{out.absolute().name}.old-{os.getpid()}")
        out.rename(old)
        part.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        part.rename(out)
    _fsync_dir(part.parent)
    return out


def _build(part: Path, spec, dialect: str, table, total: int, n: int, seed: int, stamp: dict, progress: bool) -> None:
    part.mkdir(parents=True)
    config = build_config(spec, dialect)
    _write_json(part / "config.json", config)
    eos = config["text_config"]["eos_token_id"]
    if dialect == "release":
        from convert.synthetic import synth_release as rel
        _write_json(part / "generation_config.json", rel.release_generation_config(eos))
        build_tokenizer_files(part, not_special=rel.RELEASE_NOT_SPECIAL, template=rel.RELEASE_CHAT_TEMPLATE)
    else:
        _write_json(part / "generation_config.json", {
            "_from_model_config": True, "eos_token_id": eos, "pad_token_id": eos[0],
            "do_sample": False, "transformers_version": config["transformers_version"]})
        build_tokenizer_files(part)
    _write_json(part / "preprocessor_config.json", PREPROCESSOR_CONFIG)

    shards = _split_shards(table, n)
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    prog = _Progress(total, progress)
    for fname, rows in zip(names, shards):
        _write_safetensors(part / fname, rows, seed, prog)
    prog.add(0, final=True)
    _write_json(part / "model.safetensors.index.json", {
        "metadata": {"total_size": total},
        "weight_map": {name: f for f, rows in zip(names, shards) for name, _, _ in rows}})
    _write_json(part / STAMP, stamp)  # written last: its presence means the rest is complete
    _fsync_dir(part)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.synth", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dialect", choices=DIALECTS, default="v5")
    ap.add_argument("--shards", type=int, default=None, help="number of safetensors shards (min 1)")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    from convert.errors import ConversionError
    try:
        out = make_checkpoint(a.out_dir, a.size, a.seed, a.dialect, a.shards, progress=not a.quiet)
    except ConversionError as e:
        print(f"synth: error: {e}", file=sys.stderr)
        return 3
    if not a.quiet:
        print(f"synth: {out} ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
