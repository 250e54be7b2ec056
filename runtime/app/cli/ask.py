"""``glmv ask``, ``glmv chat`` and ``glmv console``: questions about one photo, the answer streamed to
the terminal (or one JSON object per answer with --json), timings and the sampling used on stderr."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.app.cli.common import EXIT_OK, _engine, _err, _sampling, locate_or_demo, pixel_budget


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
    from runtime.engine.generate import jump_forward_counts
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
              "ttft_ms": round(t.ttft_ms, 1), "decode_tps": round(t.decode_tps, 2),
              "decode_ms": round(t.decode_ms, 1), "reasoning_capped": last.reasoning_capped, "sampling": sampling.describe(),
              "load_ms": round(session.engine.load_ms, 1), "memory_policy": session.engine.memory_policy.name,
              **jump_forward_counts(t),
              "threads": {"prompt": t.threads.batch, "decode": t.threads.decode, "why": t.threads.why} if t.threads else None}
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


def _ask(text: Path, mmproj: Path, photo: Path, question: str, a) -> dict:
    from runtime.engine import images
    img = images.load(photo, pixel_budget=pixel_budget(a, text))
    eng = _engine(a, text, mmproj)
    try:
        return _stream(eng.session(img, enable_thinking=a.think), question, a)
    finally:
        eng.close()


def cmd_ask(a) -> int:
    text, mmproj = locate_or_demo(a)
    _ask(text, mmproj, Path(a.photo), a.question, a)
    return EXIT_OK


def cmd_chat(a) -> int:
    """Multi-turn about one photo. With --json: one question per stdin line, one JSON object per answer."""
    import signal
    from runtime.engine import images
    from runtime.engine.session import ContextFullError
    text, mmproj = locate_or_demo(a)
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


def cmd_console(a) -> int:
    """The console UI: glmv.exe opens it in a console window when its own window cannot start (a
    WinPE stick). It says why, asks for a photo (Enter: the sample plate), then works as `glmv chat`."""
    from runtime.common.paths import resources_dir
    if a.why:
        print(f"glmv: {a.why}. This is the console version; everything else works the same.")
    print("Ask about a photo: type a question and press Enter; /exit quits.")
    sample = resources_dir() / "assets" / "samples" / "plate-synthetic.jpg"
    while not a.photo:
        try:
            line = input(f"Photo file (press Enter for the sample plate {sample.name}): ").strip().strip('"')
        except (EOFError, KeyboardInterrupt):
            print()
            return EXIT_OK
        photo = Path(line).expanduser() if line else sample
        if photo.is_file():
            a.photo = str(photo)
        else:
            print(f"  there is no file {photo}: type its full path, or drag the file into this window")
    a.json = False
    # like the window: with no model installed, the built-in demo model answers
    from runtime.engine.model_locator import locate_model_files_or_demo
    a.model_dir = str(locate_model_files_or_demo(a.model_dir, getattr(a, "data_dir", None)).text.parent)
    return cmd_chat(a)
