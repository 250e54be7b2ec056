"""``glmv``: the command line of glmv-portable. This module parses, checks and runs a command and
turns its errors into exit codes; the commands themselves live beside it (parser.py lists them).

Commands:
  glmv synth OUT [--size tiny|medium|full]     make the synthetic GLM-4.6V checkpoint
  glmv convert SRC --out DIR [--quant auto] [--mmproj-quant Q8_0]
                                              Hugging Face checkpoint → GGUF pair + manifest.json
  glmv ask PHOTO "question" [--model-dir DIR] answer one question about a photo (streams)
  glmv chat PHOTO [--json]                    multi-turn about one photo; --json: a question per stdin
                                              line, a JSON object per answer
  glmv read-plate PHOTO... [--json|--csv]     nameplate fields (schema-constrained), unit and
                                              plausibility checks; appended to readings.jsonl
  glmv models [--verify]                      GGUF pairs found, sizes, quant, checksums
  glmv doctor [--json]                        CPU and flags, llama.cpp CPU variant, RAM, GPU/VRAM,
                                              models found, the quant recommended for this machine
  glmv demo                                   the built-in demo model reads a sample plate, checked against its truth
  glmv --self-test                            offline end-to-end check on the demo model (JSON report)
  glmv --check-winpe [--system32 DIR]         Windows bundle: which system DLLs this Windows (a PE stick)
                                              lacks, for the command line and for the window
  glmv serve [--host H] [--port P] [--token T] local HTTP server (web UI, app API, OpenAI-compatible
                                              /v1); prints its URL as the first line of stdout

Exit codes: 0 success · 1 unexpected failure · 2 usage error · 3 bad input (photo, model
files, checkpoint) · 4 not enough resources (disk full, context too small).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from runtime.app.cli.parser import build_parser as _bare_parser
from runtime.app.cli.common import (EXIT_FAIL, EXIT_INPUT, EXIT_OK, EXIT_RESOURCES, EXIT_USAGE, UsageError, _err,
                                    _resolve_sampling)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; --help ends with the command list and exit codes above."""
    return _bare_parser(epilog=__doc__.split("\n\n", 1)[1])


def _check_args(a) -> None:
    """Settings are checked before the model loads (minutes on a laptop): the memory policy
    forced from the environment, sampling overrides, budgets."""
    forced = os.environ.get("GLMV_MEMORY_POLICY")
    if forced:
        from runtime.llama.memory_policy import parse
        try:
            parse(forced)
        except ValueError as e:
            raise UsageError(f"GLMV_MEMORY_POLICY: {e}") from None
    from runtime.llama.pair import VISION_FLASH_ATTN_ENV, vision_flash_attn_setting
    try:
        vision_flash_attn_setting()
    except ValueError as e:
        raise UsageError(f"{VISION_FLASH_ATTN_ENV}: {e}") from None
    if not hasattr(a, "greedy"):
        return
    from runtime.engine.sampling import SamplingOptions
    _resolve_sampling(a, SamplingOptions())
    if getattr(a, "think_budget", 0) < 0:
        raise UsageError(f"--think-budget must be 0 or more, not {a.think_budget}")


def _utf8_output() -> None:
    """JSON, CSV and answers go out as UTF-8 (Chinese plates, paths): on Windows a pipe or file
    otherwise gets the ANSI code page (cp1252), and the first character outside it raises
    UnicodeEncodeError. A Windows console already takes Unicode; a UTF-8 locale needs nothing."""
    for stream in (sys.stdout, sys.stderr):
        enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if enc and enc != "utf8" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(encoding="utf-8", errors="replace")
            except (ValueError, OSError):
                pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _utf8_output()
    from runtime.llama.cpu_probe import PROBE_FLAG
    from runtime.app.window import WINDOW_FLAG, run_window
    # the frozen bundle re-executes itself for the CPU-variant probe and for the window child
    if argv[:1] == [PROBE_FLAG]:
        from convert.synthetic.probe_models import run_probe
        return run_probe()
    from runtime.llama.vulkan_probe import PROBE_FLAG as VULKAN_PROBE_FLAG
    if argv[:1] == [VULKAN_PROBE_FLAG]:
        from runtime.llama.vulkan_probe import run_child
        return run_child()
    if len(argv) == 2 and argv[0] == WINDOW_FLAG:
        return run_window(argv[1])
    if not argv:  # a double-click: the server and its window (or the browser)
        argv = ["serve"]
    if argv[0] in ("--self-test", "--check-winpe"):
        argv = [argv[0][2:], *argv[1:]]
    a = build_parser().parse_args(argv)
    if not getattr(a, "fn", None):
        build_parser().print_help()
        return EXIT_USAGE
    if getattr(a, "data_dir", None):
        # one data folder for everything this process (and its probe child) writes
        os.environ["GLMV_DATA_DIR"] = str(Path(a.data_dir).expanduser().resolve())
    from convert.errors import ConversionError
    from runtime.llama.backends import BackendError
    from runtime.engine.images import ImageError
    from runtime.llama.pair import ModelError
    from runtime.engine.model_files import ModelFileError
    from runtime.engine.session import ContextFullError
    try:
        _check_args(a)
        return a.fn(a)
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except ConversionError as e:
        _err(str(e))
        return EXIT_RESOURCES if "disk full" in str(e) else EXIT_INPUT
    except (ImageError, ModelFileError) as e:
        _err(str(e))
        return EXIT_INPUT
    except ContextFullError as e:
        _err(str(e))
        return EXIT_RESOURCES
    except (ModelError, BackendError) as e:
        _err(str(e))
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:  # a data folder that is a file, a full disk, a vanished USB stick...
        where = f" ({e.filename})" if e.filename else ""
        _err(f"{e.strerror or e}{where}")
        return EXIT_RESOURCES if e.errno in (errno.ENOSPC, errno.EDQUOT) else EXIT_FAIL
