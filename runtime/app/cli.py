"""``glmv``: the command line of glmv-portable.

Commands:
  glmv synth OUT [--size tiny|medium|full]     make the synthetic GLM-4.6V checkpoint
  glmv convert SRC --out DIR [--quant Q4_K_M] [--mmproj-quant Q8_0]
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
  glmv serve [--host H] [--port P] [--token T] local HTTP server (web UI, app API, OpenAI-compatible
                                              /v1); prints its URL as the first line of stdout

Exit codes: 0 success · 1 unexpected failure · 2 usage error · 3 bad input (photo, model
files, checkpoint) · 4 not enough resources (disk full, context too small).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from runtime.engine.model_locator import find_pair, locate_pair, locate_pair_or_demo

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INPUT, EXIT_RESOURCES = 0, 1, 2, 3, 4


class UsageError(ValueError):
    """A command-line value out of range; exit 2 with the message."""


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


def _err(msg: str) -> None:
    print(f"glmv: error: {msg}", file=sys.stderr)


def cmd_synth(a) -> int:
    from convert.synthetic.synth import make_checkpoint
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
        if r.report.get("chat_template"):
            print(f"chat template: from {r.report['chat_template']}")
        sd, src = r.report.get("sampling_defaults"), r.report.get("sampling_source")
        if isinstance(sd, dict):
            sd = ", ".join(f"{k.rsplit('.', 1)[-1]} {v:g}" for k, v in sd.items())
        if sd:
            print(f"sampling defaults: {sd}" + (f" ({src})" if src else ""))
        print(f"done in {r.report['seconds']:.1f}s")
    return EXIT_OK


def _engine(a, text: Path, mmproj: Path):
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.common.paths import data_dir
    cache = None if a.no_cache else data_dir(a.data_dir) / "answer-cache"
    eng = Engine(text, mmproj, EngineOptions(n_ctx=a.ctx, n_threads=a.threads, verify=a.verify, cache_dir=cache,
                                             progress=getattr(a, "progress", None)))
    # the load line: which memory policy is in force, and why (stderr: stdout stays the answer)
    print(f"glmv: {text.name}: memory {eng.memory_policy.describe()} — {eng.memory_why}; loaded in "
          f"{eng.load_ms / 1000:.1f} s", file=sys.stderr)
    return eng


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


class _Cancel:
    """Ctrl-C while an answer streams cancels that answer (within one token); a second one exits."""

    def __init__(self):
        self.flag = False

    def __call__(self) -> bool:
        return self.flag


def _stream(session, question: str, a, cancel: _Cancel | None = None) -> dict:
    answer, reasoning, last = [], [], None
    shown_reasoning = False
    sampling = _sampling(a, session.engine)
    from runtime.engine.progress import TerminalProgress
    # reading the photo takes minutes on a CPU: say where it stands on stderr (see --progress)
    mode = getattr(a, "show_progress", "auto")
    shown = TerminalProgress("off" if a.json and mode == "auto" and not sys.stderr.isatty() else mode)
    for s in session.ask(question, max_tokens=a.max_tokens, sampling=sampling,
                         cancelled=cancel or (lambda: False), use_cache=not a.no_cache,
                         reasoning_budget=getattr(a, "think_budget", 0), progress=shown.mode != "off"):
        if s.kind == "progress":
            shown.show(s)
            continue
        shown.close()
        (reasoning if s.kind == "reasoning" else answer).append(s.text)
        last = s
        if not a.json and s.text:
            if s.kind == "reasoning":
                if not shown_reasoning:
                    print("[thinking] ", end="", file=sys.stderr)
                    shown_reasoning = True
                print(s.text, end="", file=sys.stderr, flush=True)
            else:
                print(s.text, end="", flush=True)
    t = last.timings
    result = {"answer": "".join(answer), "reasoning": "".join(reasoning), "finish_reason": last.finish_reason,
              "cached": last.cached, "prompt_tokens": last.prompt_tokens,
              "completion_tokens": last.completion_tokens, "image_encodes": session.image_encodes,
              "image_encode_ms": round(t.image_encode_ms, 1), "prefill_ms": round(t.prefill_ms, 1),
              "ttft_ms": round(t.ttft_ms, 1), "decode_tps": round(t.decode_tps, 1),
              "reasoning_capped": last.reasoning_capped, "sampling": sampling.describe(),
              "load_ms": round(session.engine.load_ms, 1), "memory_policy": session.engine.memory_policy.name}
    if a.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    else:
        print()
        note = "cached answer" if last.cached else (
            f"image encode {t.image_encode_ms:.0f} ms · prefill {t.prefill_ms:.0f} ms · first token "
            f"{t.ttft_ms:.0f} ms · {last.completion_tokens} tokens at {t.decode_tps:.1f} tok/s")
        capped = " · reasoning reached --think-budget and was closed" if last.reasoning_capped else ""
        print(f"[{last.prompt_tokens} prompt tokens · {note} · {sampling.describe()} · stop: "
              f"{last.finish_reason}{capped}]", file=sys.stderr)
    return result


def pixel_budget(a, text: Path) -> int:
    """--pixel-budget, else the model's own (its manifest), else the default."""
    from runtime.engine.model_files import pixel_budget_for
    return pixel_budget_for(text, a.pixel_budget)


def _ask(text: Path, mmproj: Path, photo: Path, question: str, a) -> dict:
    from runtime.engine import images
    img = images.load(photo, pixel_budget=pixel_budget(a, text))
    eng = _engine(a, text, mmproj)
    try:
        return _stream(eng.session(img, enable_thinking=a.think), question, a)
    finally:
        eng.close()


def cmd_ask(a) -> int:
    text, mmproj = locate_pair(a.model_dir, a.data_dir)
    _ask(text, mmproj, Path(a.photo), a.question, a)
    return EXIT_OK


def cmd_chat(a) -> int:
    """Multi-turn about one photo. With --json: one question per stdin line, one JSON object per answer."""
    import signal
    from runtime.engine import images
    from runtime.engine.session import ContextFullError
    text, mmproj = locate_pair(a.model_dir, a.data_dir)
    img = images.load(a.photo, pixel_budget=pixel_budget(a, text))
    eng = _engine(a, text, mmproj)
    session = eng.session(img, enable_thinking=a.think)
    cancel = _Cancel()

    def on_sigint(signum, frame):
        if cancel.flag:
            raise KeyboardInterrupt
        cancel.flag = True
    old = signal.signal(signal.SIGINT, on_sigint)
    interactive = not a.json and sys.stdin.isatty()
    try:
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            question = line.strip()
            if not question:
                continue
            if question in ("/exit", "/quit"):
                break
            cancel.flag = False
            try:
                _stream(session, question, a, cancel)
            except ContextFullError as e:
                if a.json:
                    print(json.dumps({"error": str(e)}), flush=True)
                else:
                    _err(str(e))
    finally:
        signal.signal(signal.SIGINT, old)
        eng.close()
    return EXIT_OK


def cmd_read_plate(a) -> int:
    from runtime.tasks.read_plate import read_plate_photo
    from runtime.engine import images
    from runtime.tasks import plate
    from runtime.engine.model_files import manifest_quant
    from runtime.common.paths import data_dir
    text, mmproj = locate_pair(a.model_dir, a.data_dir)
    budget = pixel_budget(a, text)
    for p in a.photos:   # every photo checked before the model loads; each is decoded again when read
        images.load(p, pixel_budget=budget)
    eng = _engine(a, text, mmproj)
    log = data_dir(a.data_dir) / "readings.jsonl"
    quant = manifest_quant(text)
    many = len(a.photos) > 1
    try:
        sampling = _sampling(a, eng, json_schema=json.dumps(plate.SCHEMA))
        for k, p in enumerate(a.photos):
            path = Path(p)
            r, _ = read_plate_photo(eng, path, images.load(path, pixel_budget=budget), sampling=sampling,
                                    max_tokens=a.max_tokens, use_cache=not a.no_cache, log=log, quant=quant)
            # each reading is printed as soon as it is made: an interrupted batch keeps what was read
            if a.csv:
                sys.stdout.write(plate.to_csv([(str(path), r)], header=k == 0))
            elif a.json:
                out = r.as_json()
                print(json.dumps({"photo": str(path), **out} if many else out, ensure_ascii=False))
            else:
                if many:
                    print(f"== {path}")
                print(plate.to_table(r))
            sys.stdout.flush()
    finally:
        eng.close()
    return EXIT_OK


def cmd_models(a) -> int:
    from runtime.engine.model_files import ModelFileError, check_pair, manifest_quant, verify_checksums
    from runtime.common.paths import data_dir, model_dirs
    found = []
    for d in model_dirs(a.model_dir, data_dir(a.data_dir)):
        if not d.is_dir():
            continue
        try:
            text, mmproj = find_pair(d)
            t, m = check_pair(text, mmproj)
            status = "ok (structure)"
            if a.verify:
                verify_checksums(text, mmproj)
                status = "verified (sha256)"
        except ModelFileError as e:
            if any(d.glob("*.gguf")):
                found.append({"folder": str(d), "error": str(e)})
            continue
        found.append({"folder": str(d), "text": text.name, "mmproj": mmproj.name, "quant": manifest_quant(text) or "?",
                      "bytes": text.stat().st_size + mmproj.stat().st_size, "status": status})
    if a.json:
        print(json.dumps(found, indent=2))
    elif not found:
        print("no models found in: " + ", ".join(str(d) for d in model_dirs(a.model_dir, data_dir(a.data_dir))))
    for f in ([] if a.json else found):
        if "error" in f:
            print(f"{f['folder']}: PROBLEM: {f['error']}")
        else:
            print(f"{f['folder']}: {f['text']} + {f['mmproj']}  [{f['quant']}, {f['bytes'] / 2**30:.2f} GiB, {f['status']}]")
    # a damaged model is bad input (exit 3), so scripts checking a stick with --verify see it
    return EXIT_INPUT if any("error" in f for f in found) else EXIT_OK


def cmd_doctor(a) -> int:
    from runtime.engine import hardware
    from runtime.llama.backends import ensure_loaded, import_llama_cpp
    from runtime.common.paths import data_dir, model_dirs
    import_llama_cpp()
    info = ensure_loaded()
    mem = hardware.memory()
    gpus = [d.summary() for d in info.gpus]
    from runtime.llama.memory_policy import choose as choose_memory_policy
    on_gpu = bool(info.gpus)
    quant, quant_why = hardware.quant_advice(max(d.memory_free for d in info.gpus) if on_gpu
                                             else hardware.usable_ram(), gpu=on_gpu)
    models = []
    for d in model_dirs(getattr(a, "model_dir", None), data_dir(a.data_dir)):
        try:
            text, mmproj = find_pair(d)
            policy, why = choose_memory_policy(hardware.usable_ram(), text.stat().st_size + mmproj.stat().st_size,
                                               gpu_offload=on_gpu)
            models.append({"folder": str(d), "text": text.name, "mmproj": mmproj.name,
                           "memory_policy": policy.describe(), "memory_policy_why": why})
        except Exception:
            continue
    report = {"cpu": hardware.cpu_name(), "cores_physical": hardware.physical_cores(),
              "cores_logical": os.cpu_count(), "cpu_variant": info.cpu_variant,
              "cpu_features": [k for k, v in info.cpu_features.items() if v == "1"],
              "ram_total_mib": mem.total // 2**20, "ram_available_mib": mem.available // 2**20,
              "gpus": gpus, "backends": info.registries, "llama_cpp_lib": str(info.lib_dir),
              "ram_usable_mib": hardware.usable_ram() // 2**20,
              "models": models, "recommended_quant": quant, "recommended_quant_why": quant_why,
              "data_dir": str(data_dir(a.data_dir))}
    if a.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"CPU          : {report['cpu']} ({report['cores_physical']} physical / {report['cores_logical']} logical cores)")
    print(f"llama.cpp    : CPU variant {report['cpu_variant']}  [{' '.join(report['cpu_features'])}]")
    print(f"RAM          : {report['ram_available_mib'] / 1024:.1f} GiB free of {report['ram_total_mib'] / 1024:.1f} GiB")
    for g in gpus or [None]:
        print("GPU          : " + (f"{g['name']} {g['description']} — {g['memory_free_mib']} / {g['memory_total_mib']} MiB free"
                                    if g else "none (the CPU is used)"))
    for m in models or [None]:
        print("model        : " + (f"{m['text']} + {m['mmproj']} in {m['folder']}" if m else
                                    "none found (convert GLM-4.6V-Flash with `glmv convert`, put the pair in models/)"))
        if m:
            print(f"memory       : {m['memory_policy']} — {m['memory_policy_why']}")
    print(f"recommended  : {quant} — {quant_why}")
    print(f"data folder  : {report['data_dir']}")
    return EXIT_OK


def cmd_demo(a) -> int:
    """The built-in demo model reads the sample plate; each field is shown beside what is printed."""
    from runtime.tasks.read_plate import read_plate_photo
    from runtime.engine import images
    from runtime.tasks import plate
    from runtime.engine.model_locator import demo_manifest, demo_pair
    from runtime.tasks.demo_check import compare, sample_plate
    from runtime.common.paths import data_dir
    from runtime.engine.sampling import SamplingOptions
    text, mmproj = demo_pair()
    photo, truth = sample_plate()
    acc = demo_manifest(text.parent).get("accuracy") or {}
    print("glmv demo: the built-in demo model (glmv-plates, 2.8 M parameters, GLM-4.6V architecture) was\n"
          "trained here for under an hour on 2 CPU cores to read the project's SYNTHETIC nameplates.\n"
          "It runs the real pipeline (GGUF → llama.cpp + mtmd → JSON grammar), but it has learned the\n"
          "answer format, not yet to read: on held-out plates it gets "
          f"{100 * acc.get('field_accuracy', 0):.0f} % of fields right "
          f"(model card: {text.parent / 'README.md'}).\n"
          "For real photos, convert GLM-4.6V-Flash: `glmv convert <hf-folder> --out models/`.\n", file=sys.stderr)
    print(f"model: {text.name} + {mmproj.name}\nphoto: {photo}\n", file=sys.stderr)
    img = images.load(photo, pixel_budget=pixel_budget(a, text))
    eng = _engine(a, text, mmproj)
    try:
        r, last = read_plate_photo(eng, photo, img, sampling=SamplingOptions(json_schema=json.dumps(plate.SCHEMA)),
                                   max_tokens=2048, use_cache=not a.no_cache,
                                   log=data_dir(a.data_dir) / "readings.jsonl", quant=None)
    finally:
        eng.close()
    keys = [k for k, _ in plate.FIELDS] + ["other"]
    cmp = compare(r.fields, truth, keys)
    show = lambda v: "—" if v in (None, []) else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))  # noqa: E731
    labels = dict(plate.FIELDS, other="Other")
    print(f"{'field':<17} {'read':<24} {'printed on the plate':<24}")
    for k in keys:
        c = cmp[k]
        print(f"{labels[k]:<17} {show(c['read']):<24} {show(c['truth']):<24} {'✓' if c['ok'] else '✗'}")
    right = sum(c["ok"] for c in cmp.values())
    print(f"\n{right} of {len(keys)} fields right · {last.completion_tokens} tokens at "
          f"{last.timings.decode_tps:.0f} tok/s", file=sys.stderr)
    return EXIT_OK


def cmd_self_test(a) -> int:
    from runtime.app import self_test
    return self_test.run(a.data_dir)


def cmd_serve(a) -> int:
    """The local server (runtime/app/server/app.py); the model loads in the background (see /api/status).
    The socket is bound and announced before the heavy imports, so the URL — and with no display
    the fallback line — come at once."""
    from runtime.app.window import display_available, no_display_notice
    from runtime.common.paths import data_dir
    from runtime.app.server.listen import BindError, announce
    if a.pixel_budget is not None:   # every photo would get a 400 otherwise: say it once, now
        from runtime.engine.images import ImageError, check_budget
        try:
            check_budget(a.pixel_budget)
        except ImageError as e:
            raise UsageError(f"--pixel-budget: {e}") from None
    try:
        ann = announce(a.host, a.port, a.token)
    except BindError as e:
        _err(str(e))
        return EXIT_USAGE
    window = not a.no_window
    if window and not display_available():
        no_display_notice(ann.page)
        window = False
    from runtime.app.server import app as server

    def locate():
        return locate_pair_or_demo(a.model_dir, a.data_dir)

    def factory(text, mmproj, progress):
        a.progress = progress  # _engine passes it to EngineOptions: load progress in /api/status
        return _engine(a, text, mmproj)
    server.serve_forever(a.host, a.port, a.token, window=window, announced=ann, data_dir=data_dir(a.data_dir),
                         n_ctx=a.ctx, locate=locate, engine_factory=factory, default_max_tokens=a.max_tokens,
                         pixel_budget=a.pixel_budget)
    return EXIT_OK


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return v


def _pixel_budget_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--pixel-budget", type=int, default=None,
                   help="max pixels sent to the vision tower (default: the model's manifest, else 802816 ≈ "
                        "1024 image tokens; at most the model's own maximum, 4816896 ≈ 6144 tokens for GLM-4.6V)")


def _engine_args(q: argparse.ArgumentParser) -> None:
    """What loading the model and preparing the photo take (every command that runs the model)."""
    q.add_argument("--ctx", type=int, default=8192, help="context size in tokens (default 8192)")
    q.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    _pixel_budget_arg(q)
    q.add_argument("--no-cache", action="store_true", help="do not reuse or store cached answers")
    q.add_argument("--verify", action="store_true", help="check sha256 against manifest.json first")
    q.add_argument("--data-dir", help="logs, caches, demo model (default: $GLMV_DATA_DIR or the user data folder)")


def _generation_args(q: argparse.ArgumentParser, *, think: bool = True, json_out: bool = True) -> None:
    from runtime.engine.sampling import DEFAULT_REASONING_BUDGET
    _engine_args(q)
    q.add_argument("--max-tokens", type=int, default=256, help="answer length limit in tokens (default 256; "
                                                                "reasoning has its own --think-budget)")
    if json_out:   # ask and chat stream their answer (read-plate reads many photos quietly)
        q.add_argument("--progress", dest="show_progress", choices=("auto", "bar", "lines", "off"), default="auto",
                       help="progress while the photo is read, on stderr: a bar on a terminal, plain lines "
                            "otherwise (auto; with --json and no terminal: off)")
    if think:
        q.add_argument("--think", action="store_true", help="let the model reason before answering (slower)")
        q.add_argument("--think-budget", type=int, default=DEFAULT_REASONING_BUDGET,
                       help=f"reasoning length limit in tokens (default {DEFAULT_REASONING_BUDGET}); at the limit the "
                            "reasoning is closed and the answer still comes")
    # sampling: the model's own settings (from its generation_config.json) unless overridden
    q.add_argument("--greedy", action="store_true",
                   help="always take the likeliest token (temperature 0; the repeat penalty still applies)")
    q.add_argument("--temperature", type=float, help="default: the model's own (0 = greedy)")
    q.add_argument("--top-p", type=float, help="default: the model's own (1 = off)")
    q.add_argument("--top-k", type=int, help="default: the model's own (0 = off)")
    q.add_argument("--repeat-penalty", type=float, help="transformers' repetition_penalty; default: the model's own")
    q.add_argument("--seed", type=int, help="sampling seed (default 0: the same question gives the same answer)")
    if json_out:
        q.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per answer)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="glmv", description="GLM-4.6V-Flash, offline, through llama.cpp.",
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command")

    s = sub.add_parser("synth", help="make the synthetic GLM-4.6V checkpoint (Hugging Face layout)")
    s.add_argument("out")
    s.add_argument("--size", choices=("tiny", "medium", "full"), default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dialect", choices=("v5", "v4", "release"), default="v5",
                   help="config.json style (transformers 5.x / 4.x / the real release's formats)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_synth)

    c = sub.add_parser("convert", help="Hugging Face GLM-4.6V checkpoint → text GGUF + mmproj GGUF")
    c.add_argument("src")
    c.add_argument("--out", required=True)
    c.add_argument("--quant", default="Q4_K_M", help="F32 F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 IQ4_NL (default Q4_K_M)")
    c.add_argument("--mmproj-quant", default="Q8_0", help="F32 F16 Q8_0 (default Q8_0)")
    c.add_argument("--name", help="base name of the output files (default: the source folder's name)")
    c.add_argument("--threads", type=int)
    c.add_argument("--force", action="store_true", help="rewrite files even when the manifest says they are done")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_convert)

    for name, fn, hlp in (("ask", cmd_ask, "answer one question about a photo (streams)"),
                          ("chat", cmd_chat, "multi-turn questions about one photo (stdin; --json for scripts)"),
                          ("demo", cmd_demo, "run the built-in demo model on a sample nameplate")):
        q = sub.add_parser(name, help=hlp)
        if name in ("ask", "chat"):
            q.add_argument("photo")
        if name == "ask":
            q.add_argument("question")
        if name != "demo":
            q.add_argument("--model-dir", help="folder with the GGUF pair (default: $GLMV_MODEL_DIR, models/ beside "
                                               "the program, then the data folder)")
            _generation_args(q)
        else:   # the demo reads the sample plate greedily under the schema: nothing else to choose
            _engine_args(q)
        q.set_defaults(fn=fn)

    rp = sub.add_parser("read-plate", help="read a nameplate's fields (JSON schema enforced by llama.cpp's grammar)")
    rp.add_argument("photos", nargs="+", metavar="PHOTO")
    rp.add_argument("--model-dir")
    # no --think: the schema's grammar holds the answer to the JSON from its first token
    _generation_args(rp, think=False, json_out=False)
    fmt = rp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per photo")
    fmt.add_argument("--csv", action="store_true", help="CSV output (one row per photo)")
    rp.set_defaults(fn=cmd_read_plate, max_tokens=2048)

    m = sub.add_parser("models", help="GGUF pairs found, sizes, quant, verified or not")
    m.add_argument("--model-dir")
    m.add_argument("--data-dir")
    m.add_argument("--verify", action="store_true", help="check sha256 against manifest.json")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_models)

    sv = sub.add_parser("serve", help="local HTTP server: web UI, app API, OpenAI-compatible /v1")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else "
                                                          "requires a bearer token, generated if not given)")
    sv.add_argument("--port", type=_port, default=0, help="port (default 0: a free port)")
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /api and /v1")
    sv.add_argument("--model-dir")
    sv.add_argument("--data-dir")
    sv.add_argument("--no-window", action="store_true", help="do not open the desktop window (headless)")
    sv.add_argument("--ctx", type=int, default=8192, help="context size in tokens (default 8192)")
    sv.add_argument("--max-tokens", type=int, default=1024, help="answer length limit for the UI (default 1024)")
    sv.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    sv.add_argument("--no-cache", action="store_true", help="do not reuse or store cached answers")
    sv.add_argument("--verify", action="store_true", help="check sha256 against manifest.json first")
    _pixel_budget_arg(sv)
    sv.set_defaults(fn=cmd_serve)

    st = sub.add_parser("self-test", help="offline end-to-end check on the built-in demo model (JSON report); "
                                          "also `glmv --self-test`")
    st.add_argument("--data-dir")
    st.set_defaults(fn=cmd_self_test)

    d = sub.add_parser("doctor", help="CPU, chosen llama.cpp CPU variant, RAM, GPUs, models, recommended quant")
    d.add_argument("--model-dir")
    d.add_argument("--data-dir")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from runtime.llama.cpu_probe import PROBE_FLAG
    from runtime.app.window import WINDOW_FLAG, run_window
    # the frozen bundle re-executes itself for the CPU-variant probe and for the window child
    if argv[:1] == [PROBE_FLAG]:
        from convert.synthetic.probe_models import run_probe
        return run_probe()
    if len(argv) == 2 and argv[0] == WINDOW_FLAG:
        return run_window(argv[1])
    if not argv:  # a double-click: the server and its window (or the browser)
        argv = ["serve"]
    if argv[0] == "--self-test":
        argv = ["self-test", *argv[1:]]
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


if __name__ == "__main__":
    sys.exit(main())
