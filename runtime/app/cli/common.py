"""What every ``glmv`` command shares: exit codes, the usage error, the one-line error message,
loading the model (with its load line on stderr), the pixel budget and the sampling overrides."""
from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INPUT, EXIT_RESOURCES = 0, 1, 2, 3, 4


class UsageError(ValueError):
    """A command-line value out of range; exit 2 with the message."""


def _err(msg: str) -> None:
    print(f"glmv: error: {msg}", file=sys.stderr)


def device_request(a):
    """The device asked for (``--device``, else GLMV_DEVICE); a bad GLMV_DEVICE is a usage error
    (``--device`` is checked by the parser), not a failed load."""
    from runtime.engine.device_choice import DeviceRequest
    try:
        return DeviceRequest.from_env(getattr(a, "device", None))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _engine(a, text: Path, mmproj: Path, progress=None):
    """The engine for ``a``'s settings; ``progress`` receives load progress (the server's /api/status)."""
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.common.paths import data_dir
    device_request(a)
    cache = None if a.no_cache else data_dir(a.data_dir) / "answer-cache"
    eng = Engine(text, mmproj, EngineOptions(n_ctx=a.ctx, n_threads=a.threads, verify=a.verify, cache_dir=cache,
                                             progress=progress, device=getattr(a, "device", None),
                                             n_gpu_layers=getattr(a, "gpu_layers", -1),
                                             jump_forward=False if getattr(a, "jump_forward", True) is False else None))
    # the load lines: which device and memory policy are in force, and why (stderr: stdout stays the answer)
    for note in eng.device.notes:
        print(f"glmv: {note}", file=sys.stderr)
    print(f"glmv: device: {eng.device.label()} — {eng.device.why}", file=sys.stderr)
    print(f"glmv: {text.name}: memory {eng.memory_policy.describe()} — {eng.memory_why}; loaded in "
          f"{eng.load_ms / 1000:.1f} s", file=sys.stderr)
    return eng


def locate_or_demo(a):
    """The model the command runs: the installed pair (--model-dir, $GLMV_MODEL_DIR, beside the
    program, the data folder); with none installed, the built-in demo model — as the window and
    `glmv demo` do — with a notice on stderr that says what it can and cannot read."""
    from runtime.engine.model_locator import is_demo_model, locate_model_files_or_demo
    files = locate_model_files_or_demo(a.model_dir, a.data_dir)
    if is_demo_model(files.text) and not a.model_dir:
        print("glmv: no model installed: using the built-in demo model (glmv-plates). It was trained here on "
              "SYNTHETIC nameplates and reads few fields right; for real photos convert GLM-4.6V-Flash "
              "(`glmv convert <hf-folder> --out models/`).", file=sys.stderr)
    return files


def pixel_budget(a, text: Path) -> int:
    """--pixel-budget, else the model's own (its manifest), else the default."""
    from runtime.engine.model_files import pixel_budget_for
    return pixel_budget_for(text, a.pixel_budget)


_FLAG_NAMES = {"temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k",
               "repeat_penalty": "--repeat-penalty", "seed": "--seed"}


def _sampling(a, eng, **extra):
    """The model's own sampling settings with what the command line overrides (--greedy etc.)."""
    return _resolve_sampling(a, eng.sampling, **extra)


def _resolve_sampling(a, base, **extra):
    try:
        return base.with_(names=_FLAG_NAMES, greedy=a.greedy, temperature=a.temperature, top_p=a.top_p,
                          top_k=a.top_k, repeat_penalty=a.repeat_penalty, seed=a.seed, **extra)
    except ValueError as e:
        raise UsageError(str(e)) from None
