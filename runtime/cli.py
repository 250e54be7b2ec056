"""``glmv``: the command line of glmv-portable.

Commands:
  glmv synth OUT [--size tiny|medium|full]     make the synthetic GLM-4.6V checkpoint
  glmv convert SRC --out DIR [--quant Q4_K_M] [--mmproj-quant Q8_0]
                                              Hugging Face checkpoint → GGUF pair + manifest.json
  glmv ask PHOTO "question" --model-dir DIR   answer one question about a photo (streams)
  glmv doctor                                 CPU, chosen llama.cpp CPU variant, GPUs, RAM
  glmv demo                                   build the demo model once, ask about a sample plate

Exit codes: 0 success · 1 unexpected failure · 2 usage error · 3 bad input (photo, model
files, checkpoint) · 4 not enough resources (disk full, context too small).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INPUT, EXIT_RESOURCES = 0, 1, 2, 3, 4
SAMPLE_PLATE = Path(__file__).resolve().parent.parent / "assets" / "samples" / "plate-synthetic.jpg"
DEMO_QUESTION = "What is the serial number on this nameplate?"


def _err(msg: str) -> None:
    print(f"glmv: error: {msg}", file=sys.stderr)


def cmd_synth(a) -> int:
    from convert.synth import make_checkpoint
    out = make_checkpoint(a.out, a.size, seed=a.seed, dialect=a.dialect, progress=not a.quiet)
    print(out)
    return EXIT_OK


def cmd_convert(a) -> int:
    from convert.converter import convert
    r = convert(a.src, a.out, quant=a.quant, mmproj_quant=a.mmproj_quant, name=a.name,
                progress=not a.quiet, threads=a.threads, force=a.force)
    summary = {"text": str(r.text_path), "mmproj": str(r.mmproj_path), "manifest": str(r.manifest_path),
               "skipped": r.skipped, **r.report}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        for f in (r.text_path, r.mmproj_path):
            note = " (up to date, skipped)" if f.name in r.skipped else ""
            print(f"{f}  {f.stat().st_size / 2**20:.1f} MiB{note}")
        if r.report.get("fallbacks"):
            print(f"note: {len(r.report['fallbacks'])} tensor(s) have rows that are not a multiple of 256 and "
                  f"were stored by llama.cpp in another type: "
                  + ", ".join(f"{n}={t}" for n, t in list(r.report["fallbacks"].items())[:6]))
        print(f"done in {r.report['seconds']:.1f}s")
    return EXIT_OK


def find_pair(model_dir: Path) -> tuple[Path, Path]:
    """The (text, mmproj) pair in a folder: from manifest.json, else by file names."""
    from runtime.model_files import ModelFileError
    if not model_dir.is_dir():
        raise ModelFileError(f"model folder not found: {model_dir}")
    man = model_dir / "manifest.json"
    if man.is_file():
        files = json.loads(man.read_text()).get("files") or {}
        if "text" in files and "mmproj" in files:
            return model_dir / files["text"]["file"], model_dir / files["mmproj"]["file"]
    mm = sorted(model_dir.glob("mmproj*.gguf"))
    text = sorted(p for p in model_dir.glob("*.gguf") if not p.name.startswith("mmproj"))
    if not text:
        raise ModelFileError(f"no text model (*.gguf) in {model_dir}: put the GGUF pair written by `glmv convert` there")
    if not mm:
        raise ModelFileError(f"no projector (mmproj-*.gguf) in {model_dir}: the vision part is missing — copy the "
                             "mmproj file from the same conversion")
    return text[0], mm[0]


def _print_stream(steps, as_json: bool) -> dict:
    answer, last = [], None
    for s in steps:
        answer.append(s.text)
        last = s
        if not as_json and s.text:
            print(s.text, end="", flush=True)
    t = last.timings
    result = {"answer": "".join(answer), "finish_reason": last.finish_reason,
              "prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
              "image_encode_ms": round(t.image_encode_ms, 1), "prefill_ms": round(t.prefill_ms, 1),
              "ttft_ms": round(t.ttft_ms, 1), "decode_tps": round(t.decode_tps, 1)}
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print()
        print(f"[{result['prompt_tokens']} prompt tokens · image encode {result['image_encode_ms']:.0f} ms · "
              f"prefill {result['prefill_ms']:.0f} ms · first token {result['ttft_ms']:.0f} ms · "
              f"{result['completion_tokens']} tokens at {result['decode_tps']:.1f} tok/s · "
              f"stop: {result['finish_reason']}]", file=sys.stderr)
    return result


def _ask(text: Path, mmproj: Path, photo: Path, question: str, a) -> dict:
    from runtime import images
    from runtime.engine import Engine, EngineOptions
    img = images.load(photo, pixel_budget=a.pixel_budget)
    eng = Engine(text, mmproj, EngineOptions(n_ctx=a.ctx, n_threads=a.threads, verify=a.verify))
    try:
        return _print_stream(eng.ask(img, question, max_tokens=a.max_tokens, enable_thinking=a.think), a.json)
    finally:
        eng.close()


def cmd_ask(a) -> int:
    text, mmproj = find_pair(Path(a.model_dir or os.environ.get("GLMV_MODEL_DIR") or "models"))
    _ask(text, mmproj, Path(a.photo), a.question, a)
    return EXIT_OK


def cmd_doctor(a) -> int:
    from runtime.backends import ensure_loaded, import_llama_cpp
    import_llama_cpp()
    info = ensure_loaded()
    report = {"cpu_variant": info.cpu_variant, "cpu_features": [k for k, v in info.cpu_features.items() if v == "1"],
              "backends": info.registries,
              "devices": [{"name": d.name, "kind": d.kind, "description": d.description,
                           "memory_free_mib": d.memory_free // 2**20, "memory_total_mib": d.memory_total // 2**20}
                          for d in info.devices],
              "llama_cpp_lib": str(info.lib_dir)}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"CPU variant : {report['cpu_variant']}  ({' '.join(report['cpu_features'])})")
        for d in report["devices"]:
            print(f"device      : {d['name']} [{d['kind']}] {d['description']} "
                  f"{d['memory_free_mib']} / {d['memory_total_mib']} MiB free")
        print(f"llama.cpp   : {report['llama_cpp_lib']}")
    return EXIT_OK


def cmd_demo(a) -> int:
    from convert.converter import convert
    from convert.synth import make_checkpoint
    from runtime.paths import data_dir
    root = data_dir(a.data_dir) / "demo"
    print("glmv demo: the synthetic demo model has RANDOM weights — its answers are meaningless noise.\n"
          "It shows the real pipeline (checkpoint → GGUF → llama.cpp + mtmd). For real answers, convert\n"
          "GLM-4.6V-Flash with `glmv convert <hf-folder> --out models/` and run `glmv ask PHOTO \"question\"`.\n",
          file=sys.stderr)
    t0 = time.perf_counter()
    src = make_checkpoint(root / "checkpoint", "tiny", seed=0)
    conv = convert(src, root / "gguf", quant="Q4_K_M", mmproj_quant="Q8_0", name="glmv-demo", progress=False)
    print(f"demo model ready in {time.perf_counter() - t0:.1f}s: {conv.text_path.name} + {conv.mmproj_path.name}"
          f" in {conv.text_path.parent}", file=sys.stderr)
    print(f"Q: {DEMO_QUESTION}  (photo: {SAMPLE_PLATE.name})", file=sys.stderr)
    _ask(conv.text_path, conv.mmproj_path, SAMPLE_PLATE, DEMO_QUESTION, a)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="glmv", description="GLM-4.6V-Flash, offline, through llama.cpp.",
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command")

    s = sub.add_parser("synth", help="make the synthetic GLM-4.6V checkpoint (Hugging Face layout)")
    s.add_argument("out")
    s.add_argument("--size", choices=("tiny", "medium", "full"), default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dialect", choices=("v5", "v4"), default="v5", help="config.json style (transformers 5.x / 4.x)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_synth)

    c = sub.add_parser("convert", help="Hugging Face GLM-4.6V checkpoint → text GGUF + mmproj GGUF")
    c.add_argument("src")
    c.add_argument("--out", required=True)
    c.add_argument("--quant", default="Q4_K_M", help="F32 F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M (default Q4_K_M)")
    c.add_argument("--mmproj-quant", default="Q8_0", help="F32 F16 Q8_0 (default Q8_0)")
    c.add_argument("--name", help="base name of the output files (default: the source folder's name)")
    c.add_argument("--threads", type=int)
    c.add_argument("--force", action="store_true", help="rewrite files even when the manifest says they are done")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_convert)

    for name, fn, hlp in (("ask", cmd_ask, "answer one question about a photo"),
                          ("demo", cmd_demo, "run the built-in demo model on a sample nameplate")):
        q = sub.add_parser(name, help=hlp)
        if name == "ask":
            q.add_argument("photo")
            q.add_argument("question")
            q.add_argument("--model-dir", help="folder with the GGUF pair (default: $GLMV_MODEL_DIR or ./models)")
        q.add_argument("--max-tokens", type=int, default=128)
        q.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
        q.add_argument("--threads", type=int)
        q.add_argument("--pixel-budget", type=int, default=1024 * 28 * 28, help="max pixels sent to the vision tower")
        q.add_argument("--think", action="store_true", help="let the model reason before answering (slower)")
        q.add_argument("--verify", action="store_true", help="check sha256 against manifest.json first")
        q.add_argument("--data-dir")
        q.add_argument("--json", action="store_true")
        q.set_defaults(fn=fn)

    d = sub.add_parser("doctor", help="what this machine offers llama.cpp")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from runtime.cpu_probe import PROBE_FLAG, run_probe
    if argv[:1] == [PROBE_FLAG]:  # the frozen bundle re-executes itself to test a CPU variant
        return run_probe()
    a = build_parser().parse_args(argv)
    if not getattr(a, "fn", None):
        build_parser().print_help()
        return EXIT_USAGE
    from convert.errors import ConversionError
    from runtime.backends import BackendError
    from runtime.images import ImageError
    from runtime.llama_model import ModelError
    from runtime.model_files import ModelFileError
    try:
        return a.fn(a)
    except ConversionError as e:
        _err(str(e))
        return EXIT_RESOURCES if "disk full" in str(e) else EXIT_INPUT
    except (ImageError, ModelFileError) as e:
        _err(str(e))
        return EXIT_INPUT
    except (ModelError, BackendError) as e:
        _err(str(e))
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
