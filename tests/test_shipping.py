"""What ships must not need the test-only reference stack (torch, transformers)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_converter_and_runtime_import_neither_torch_nor_transformers():
    code = ("import sys; import convert.converter, convert.synthetic.synth, runtime.app.cli, runtime.engine.engine, runtime.engine.images, "
            "runtime.engine.model_files, runtime.llama.backends; bad = [m for m in ('torch', 'transformers', 'tokenizers', "
            "'safetensors') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_help_lists_the_commands():
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for cmd in ("synth", "convert", "ask", "doctor", "demo"):
        assert cmd in r.stdout
