"""Progress while a photo is read, and cancelling it (issue 13, item 4), on real llama.cpp.

The engine's stream (phases in order, an estimate learnt from the last turn and kept in the data
folder), cancel within one batch of the prompt and at the vision tower's end with the KV cache
left consistent (a negative control shows the check can fail), the CLI's stderr (plain lines
through a pipe, a tqdm bar under a pseudo-terminal, nothing with --json), the app API's events
and the OpenAI stream's comments.

``python tests/test_progress.py MODEL_DIR`` measures the worst-case cancel latency on a model
(the figures in docs/benchmarks.md).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import test_image  # noqa: E402
from runtime.engine import images  # noqa: E402
from runtime.engine.engine import Engine, EngineOptions  # noqa: E402
from runtime.engine.generate import Progress  # noqa: E402

BATCH = 32          # a small llama.cpp batch, so that a short prompt spans many batches
QUESTION = "Describe the plate in detail. " * 12


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(test_image(w, h)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo():
    return images.prepare(_png(672, 448), name="big.png", pixel_budget=672 * 448)   # 384 image tokens


@pytest.fixture(scope="module")
def engine(converted, tmp_path_factory):
    conv = converted("F32", "F32")
    data = tmp_path_factory.mktemp("progress-data")
    # photo memory off: every turn here runs the vision tower (its own tests: test_photo_memory.py)
    off = {"photo_memory_bytes": 0} if "photo_memory_bytes" in EngineOptions.__dataclass_fields__ else {}
    eng = Engine(conv.text_path, conv.mmproj_path,
                 EngineOptions(n_ctx=2048, f32_kv=True, cache_dir=data / "answer-cache", **off))
    eng.pair.n_batch = BATCH
    yield eng
    eng.close()


def _split(stream):
    prog, steps = [], []
    for s in stream:
        (prog if isinstance(s, Progress) else steps).append(s)
    return prog, steps


def test_progress_phases_estimate_and_same_answer(engine, photo):
    prog, steps = _split(engine.session(photo).ask(QUESTION, max_tokens=4, use_cache=False, progress=True))
    phases = [p.phase for p in prog]
    # photo, then the text before the image, the tower, then the image and the question fed
    assert phases[0] == "photo" and "vision" in phases and phases[-1] == "prompt", phases
    first = {ph: phases.index(ph) for ph in ("photo", "vision", "prompt")}
    assert first["photo"] < first["vision"] and max(i for i, ph in enumerate(phases) if ph == "vision") < len(phases) - 1
    fed = [p for p in prog if p.phase == "prompt" and not p.estimated]
    assert [p.done for p in fed] == sorted(p.done for p in fed) and fed[-1].done == fed[-1].total == steps[-1].prompt_tokens
    assert len({p.done for p in fed}) >= steps[-1].prompt_tokens // BATCH   # reported after every batch
    assert all(p.elapsed_s >= 0 for p in prog) and fed[-1].eta_s == 0.0
    # the first turn on this machine had no measurement of the tower: no estimate until it ended
    assert prog[phases.index("vision")].eta_s is None
    book = json.loads((Path(engine.options.cache_dir).parent / "progress-costs.json").read_text())
    (entry,) = book.values()
    assert entry["vision_ms_per_token"] > 0 and entry["prompt_ms_per_token"] > 0 and entry["runs"] == 1

    # the next photo is estimated from the first from its start, and the tower's advance is interpolated
    prog2, steps2 = _split(engine.session(photo).ask(QUESTION, max_tokens=4, use_cache=False, progress=True))
    v = next(p for p in prog2 if p.phase == "vision")
    assert v.eta_s is not None and v.eta_s > 0 and 0 <= v.fraction < 1
    # progress changes nothing in the answer
    _, plain = _split(engine.session(photo).ask(QUESTION, max_tokens=4, use_cache=False))
    assert [s.token for s in plain] == [s.token for s in steps2] == [s.token for s in steps]


def _follow_up_logits(session):
    """The logits after a follow-up question (what the cache holds decides them)."""
    return session.prompt_logits("And the serial number?")[-1]


def _fresh_logits(engine, photo, messages):
    s = engine.session(photo)
    s.messages = [dict(m) for m in messages]
    return _follow_up_logits(s)


@pytest.mark.parametrize("at", [100, 400], ids=["in-the-image", "in-the-question"])
def test_cancel_within_one_batch_leaves_the_cache_consistent(engine, photo, at):
    s = engine.session(photo)
    flag = {"on": False, "at": None}

    def cancelled():
        return flag["on"]
    seen_after = []
    stream = s.ask(QUESTION, max_tokens=4, use_cache=False, progress=True, cancelled=cancelled)
    for item in stream:
        if isinstance(item, Progress) and item.phase == "prompt" and not item.estimated:
            if flag["on"]:
                seen_after.append(item.done)
            elif item.done > at:     # 5 text tokens, 384 image tokens, then the question
                flag["on"], flag["at"] = True, item.done
    last = item
    assert last.finish_reason == "cancelled" and last.completion_tokens == 0
    assert all(d - flag["at"] <= BATCH for d in seen_after), (flag, seen_after)   # at most one more batch
    # engine.kv holds whole items: a cancel inside the image drops the image's cells fed so far
    fed = sum(384 if hasattr(i, "n_pos") else 1 for i in engine.kv)
    assert (fed < 384) if at < 384 else (flag["at"] <= fed <= flag["at"] + BATCH), (fed, flag)
    # the cache holds exactly what engine.kv says: the follow-up reads as in a fresh session
    got = _follow_up_logits(s)
    want = _fresh_logits(engine, photo, s.messages)
    assert np.allclose(got, want, atol=1e-3), np.abs(got - want).max()


def test_cancel_at_the_vision_tower_end_keeps_its_output(engine, photo):
    s = engine.session(photo)
    on = {"v": False}
    items = []
    stream = s.ask(QUESTION, max_tokens=4, use_cache=False, progress=True, cancelled=lambda: on["v"])
    for item in stream:
        items.append(item)
        if isinstance(item, Progress) and item.phase == "vision":
            on["v"] = True      # the tower runs on: the turn stops when it ends
    assert items[-1].finish_reason == "cancelled" and s.image_encodes == 1
    after = items[max(i for i, p in enumerate(items) if getattr(p, "phase", "") == "vision") + 1:]
    assert all(getattr(p, "phase", "") != "prompt" or p.done < 384 for p in after)   # the image was not fed
    # the next question reuses the tower's output and reads consistently
    on["v"] = False
    got = _follow_up_logits(s)
    assert s.image_encodes == 1
    assert np.allclose(got, _fresh_logits(engine, photo, s.messages), atol=1e-3)


def test_consistency_check_fails_on_a_broken_cache(engine, photo):
    """Negative control: a cache that lacks what engine.kv claims reads differently."""
    s = engine.session(photo)
    on = {"v": False}
    for item in s.ask(QUESTION, max_tokens=4, use_cache=False, progress=True, cancelled=lambda: on["v"]):
        if isinstance(item, Progress) and item.phase == "prompt" and item.done > 400:
            on["v"] = True
    n_pos = sum(i.n_pos if hasattr(i, "n_pos") else 1 for i in engine.kv)
    engine.pair.truncate(n_pos - 3)     # the cache loses the last 3 tokens; engine.kv still lists them
    got = _follow_up_logits(s)
    assert not np.allclose(got, _fresh_logits(engine, photo, s.messages), atol=1e-3)


# --- the CLI ------------------------------------------------------------------------------------
def _cli_env(tmp_path):
    return dict(os.environ, PYTHONPATH=str(ROOT), GLMV_DATA_DIR=str(tmp_path / "data"), COLUMNS="100")


def _cli_args(conv, photo_path, *extra):
    return [sys.executable, "-m", "runtime.app.cli", "ask", str(photo_path), "What is it?", "--model-dir",
            str(conv.text_path.parent), "--pixel-budget", str(672 * 448), "--max-tokens", "3", "--no-cache", *extra]


@pytest.fixture(scope="module")
def cli_photo(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "big.png"
    p.write_bytes(_png(672, 448))
    return p


def test_cli_plain_lines_without_a_terminal_and_quiet_json(converted, cli_photo, tmp_path):
    conv = converted("Q8_0", "Q8_0")
    r = subprocess.run(_cli_args(conv, cli_photo), capture_output=True, text=True, env=_cli_env(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("glmv: ") and " · " in ln]
    assert any("vision tower 0/384" in ln for ln in lines) and any("reading the prompt" in ln for ln in lines), r.stderr
    assert "\r" not in r.stderr and "%|" not in r.stderr          # no bar drawn into a pipe
    j = subprocess.run(_cli_args(conv, cli_photo, "--json"), capture_output=True, text=True, env=_cli_env(tmp_path),
                       timeout=300)
    assert j.returncode == 0 and "vision tower" not in j.stderr, j.stderr
    assert json.loads(j.stdout)["finish_reason"] in ("stop", "length")


def test_cli_draws_a_bar_on_a_terminal(converted, cli_photo, tmp_path):
    import pty
    import select
    conv = converted("Q8_0", "Q8_0")
    master, slave = pty.openpty()
    p = subprocess.Popen(_cli_args(conv, cli_photo), stdin=slave, stdout=subprocess.PIPE, stderr=slave,
                         env=_cli_env(tmp_path))
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:     # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    p.wait(timeout=60)
    os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0, text
    # tqdm redraws its line in place: carriage returns, a percentage and a bar
    assert "\r" in text and "%|" in text and "vision tower" in text and "reading the prompt" in text, text[-2000:]
    assert "glmv: vision tower" not in text      # no plain lines on a terminal


# --- the server ---------------------------------------------------------------------------------
def test_app_api_events_and_openai_comments(converted, tmp_path, cli_photo):
    import base64
    import requests
    from runtime.app.server import app as server
    conv = converted("Q8_0", "Q8_0")
    h = server.run("127.0.0.1", 0, model_dir=conv.text_path.parent, data_dir=tmp_path / "data")
    try:
        deadline = time.monotonic() + 60
        while requests.get(h.url + "api/status").json()["state"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        up = requests.post(h.url + "api/sessions", files={"photo": ("big.png", cli_photo.read_bytes(), "image/png")})
        sid = up.json()["session_id"]
        with requests.post(h.url + f"api/sessions/{sid}/ask", json={"question": "What is it?", "max_tokens": 3},
                           stream=True) as r:
            ev = [json.loads(x[6:]) for x in r.iter_lines(decode_unicode=True) if x.startswith("data: ")]
        first_piece = next(i for i, e in enumerate(ev) if e["type"] != "progress")
        prog = ev[:first_piece]
        assert {"photo", "vision", "prompt"} <= {e["phase"] for e in prog} and ev[-1]["type"] == "done"
        assert set(prog[-1]) == {"type", "phase", "done", "total", "elapsed_s", "eta_s", "fraction", "estimated"}
        assert prog[-1]["done"] == prog[-1]["total"] == ev[-1]["prompt_tokens"]
        assert not any(e["type"] == "progress" for e in ev[first_piece:])

        uri = "data:image/png;base64," + base64.b64encode(cli_photo.read_bytes()).decode()
        body = {"model": "x", "stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Anything new?"}, {"type": "image_url", "image_url": {"url": uri}}]}]}
        with requests.post(h.url + "v1/chat/completions", json=body, stream=True) as r:
            lines = [x for x in r.iter_lines(decode_unicode=True) if x]
        comments = [x for x in lines if x.startswith(": progress ")]
        assert comments and json.loads(comments[-1][len(": progress "):])["phase"] == "prompt"
        data = [x for x in lines if x.startswith("data: ")]
        assert data[-1] == "data: [DONE]" and all(x.startswith(("data: ", ": progress ")) for x in lines)
        # an OpenAI client reads the same stream as ever
        from openai import OpenAI
        client = OpenAI(base_url=h.url + "v1", api_key="x", max_retries=0, timeout=60)
        chunks = list(client.chat.completions.create(**{**body, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Once more?"}, {"type": "image_url", "image_url": {"url": uri}}]}]}))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    finally:
        h.stop()


# --- measuring the worst case (not a test) ------------------------------------------------------
def _cancel_latency(eng, img, where: str, question: str = "What is the serial number?",
                    after: int = 0) -> tuple[float, Progress]:
    """Seconds from a cancel to the turn's end, in the worst case. ``vision``: the cancel comes as
    the tower starts (it runs to its end). ``prompt``: it comes just after a check between batches
    (the first check after a prompt event past ``after`` tokens answers "no" and notes the time;
    the next says "yes"): the batch then fed is the latency."""
    state = {"armed": False, "t": None}

    def cancelled():
        if state["armed"] and state["t"] is None:
            state["t"] = time.perf_counter()
            return False
        return state["t"] is not None
    first = None
    for item in eng.session(img).ask(question, max_tokens=4, use_cache=False, progress=True, cancelled=cancelled):
        if isinstance(item, Progress) and item.phase == where and not item.estimated and first is None \
                and (where == "vision" or item.done > after):
            first = item
            if where == "vision":
                state["t"] = time.perf_counter()
            else:
                state["armed"] = True
    assert item.finish_reason == "cancelled", item
    return time.perf_counter() - state["t"], first


if __name__ == "__main__":
    from runtime.engine.model_locator import find_model_files
    text, mmproj = find_model_files(Path(sys.argv[1]))
    eng = Engine(text, mmproj, EngineOptions(n_ctx=4096))
    img = images.prepare(Path(ROOT / "assets/samples/plate-synthetic.jpg").read_bytes(), name="plate.jpg")
    out = {"model": text.name, "n_batch": eng.pair.n_batch, "threads": eng.pair.threads}
    for where in ("vision", "prompt"):
        lat = [_cancel_latency(eng, img, where) for _ in range(int(os.environ.get("TRIES", "3")))]
        out[f"cancel_{where}_s"] = [round(x, 3) for x, _ in lat]
        out[f"{where}_total"] = lat[0][1].total
    # a long question: the cancel lands between two full text batches after the image
    long_q = "Read every field of the plate and explain each one. " * 120
    lat = [_cancel_latency(eng, img, "prompt", long_q, after=out["vision_total"] + 8)
           for _ in range(int(os.environ.get("TRIES", "3")))]
    out["cancel_text_batch_s"] = [round(x, 3) for x, _ in lat]
    _, steps = _split(eng.session(img).ask("What is the serial number?", max_tokens=1, use_cache=False))
    out["tower_s"] = round(steps[-1].timings.image_encode_ms / 1000, 3)
    out["prefill_s"] = round(steps[-1].timings.prefill_ms / 1000, 3)
    out["prompt_tokens"] = steps[-1].prompt_tokens
    print(json.dumps(out))
    eng.close()


# --- the shared bar (runtime/common/progress_bar.py) ---------------------------------------------
def test_the_progress_bar_fits_a_terminal_that_reports_no_size_and_draws_into_a_pipe():
    import pty
    from runtime.common.progress_bar import progress_bar, terminal_size
    master, slave = pty.openpty()     # a bare pseudo-terminal: 0×0
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            assert terminal_size(tty) == (80, 24)
    finally:
        os.close(master)
        os.close(slave)
    pipe = io.StringIO()
    assert terminal_size(pipe) is None
    bar = progress_bar(10, "reading", file=pipe)
    bar.update(10)
    bar.close()
    assert "reading" in pipe.getvalue() and "100%" in pipe.getvalue()
