"""Per-field confidence of a nameplate reading from the answer's token log-probabilities: the span
arithmetic on hand-built tokens, then on the real demo model (llama.cpp, never mocked) — the
reading's confidences, the stream equal to the end, jump-forward's rows, the OpenAI-compatible
``logprobs`` (shape, and the same confidences computed remotely), the app API, and that the
confidence separates right fields from wrong ones on held-out plates (with negative controls)."""
from __future__ import annotations

import base64
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from runtime.tasks import plate
from runtime.tasks.plate_confidence import (FIELD_KEYS, FLAG_BELOW, field_confidences, flagged, pieces_from_openai,
                                            value_spans)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-synthetic.jpg"
LP = math.log


# --- hand-built tokens ----------------------------------------------------------------------------
def _tokens(*pairs):
    return [(t, lp) for t, lp in pairs]


def test_each_field_counts_only_the_tokens_of_its_value():
    pieces = _tokens(('{"', LP(0.01)), ("manufacturer", LP(0.02)), ('": "', LP(0.9)), ("AC", LP(0.5)),
                     ("ME", LP(0.8)), ('", "', LP(0.7)), ("model", LP(0.03)), ('": ', LP(0.04)), ("null", LP(0.6)),
                     (', "', LP(0.05)), ("other", LP(0.06)), ('": [', LP(0.3)), ('{"name": "x", "value": "y"}', LP(0.4)),
                     ("]", LP(0.95)), ("}", LP(0.07)))
    conf = field_confidences(pieces, "min", keys=["manufacturer", "model", "other"])
    # the key tokens (0.01, 0.02, 0.03…) never count; '": "' holds the opening quote, so it does
    assert conf["manufacturer"] == pytest.approx(0.5)
    assert conf["model"] == pytest.approx(0.6)           # `null` alone: '": ' ends before it
    assert conf["other"] == pytest.approx(0.3)           # '": [' straddles the key and the list
    mean = field_confidences(pieces, "mean", keys=["manufacturer"])["manufacturer"]
    assert mean == pytest.approx((0.9 * 0.5 * 0.8 * 0.7) ** 0.25)
    # negative control: a value token's probability does move its field (the arithmetic can fail)
    lower = [(t, LP(0.1)) if t == "ME" else (t, lp) for t, lp in pieces]
    assert field_confidences(lower, "min", keys=["manufacturer"])["manufacturer"] == pytest.approx(0.1)


def test_a_token_cut_inside_a_character_counts_where_it_stands_and_none_is_skipped():
    # "Ø" split over two tokens: the first adds "" (its byte waits), the second the character
    pieces = _tokens(('{"type": "', LP(0.9)), ("", LP(0.2)), ("Ø1", LP(0.8)), ('"', None), ("}", LP(0.1)))
    assert field_confidences(pieces, "min", keys=["type"])["type"] == pytest.approx(0.2)
    # an empty token right after a value's closing quote is not in it
    after = _tokens(('{"type": "a"', LP(0.9)), ("", LP(0.01)), ("}", LP(0.5)))
    assert field_confidences(after, "min", keys=["type"])["type"] == pytest.approx(0.9)
    # a value whose only tokens have no logprob has no confidence
    assert field_confidences(_tokens(('{"type": ', LP(0.9)), ('"a"', None), ("}", 0.0)), keys=["type"])["type"] is None


def test_a_cut_answer_has_confidences_only_for_complete_fields():
    text = '{"manufacturer": "ACME", "model": "X-10'
    conf = field_confidences([(c, LP(0.5)) for c in text])
    assert conf["manufacturer"] == pytest.approx(0.5) and conf["model"] is None
    assert set(conf) == set(FIELD_KEYS) and len(FIELD_KEYS) == 18
    assert value_spans('\n{"a": "x\\"y", "b": [1, {"c": "}"}]}') == {"a": (7, 13), "b": (20, 35)}


def test_openai_content_and_flags():
    content = [{"token": '{"duty": ', "logprob": -0.1, "bytes": [], "top_logprobs": []},
               {"token": '"S1"', "logprob": LP(0.3), "bytes": [], "top_logprobs": []},
               {"token": "}", "logprob": -0.2, "bytes": [], "top_logprobs": []}]
    conf = field_confidences(pieces_from_openai(content), keys=["duty", "year"])
    assert conf == {"duty": pytest.approx(0.3), "year": None}
    assert flagged({"duty": FLAG_BELOW / 2, "year": None, "power": 1.0}) == ["duty"]


# --- the demo model -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.model_locator import demo_model_files
    f = demo_model_files()
    # threads left to the engine: it sizes them to the CPU share other programs leave (cpu_share)
    eng = Engine(f.text, f.mmproj, EngineOptions(n_ctx=4096, photo_memory_bytes=0))
    yield eng
    eng.close()


def _load(eng, path):
    from runtime.engine import images
    from runtime.engine.model_files import pixel_budget_for
    return images.load(path, pixel_budget=pixel_budget_for(eng.text_path))


def _read(eng, img, *, jump: bool = True, use_cache: bool = False):
    """(events, answer steps, PlateDone) of one greedy reading through the use case."""
    from runtime.engine.sampling import SamplingOptions
    from runtime.tasks.read_plate import PlateDone, plate_sampling, read_plate_events
    eng.jump_forward = jump
    evs = list(read_plate_events(eng.session(img), sampling=plate_sampling(SamplingOptions()), max_tokens=1024,
                                 use_cache=use_cache, progress=False))
    assert isinstance(evs[-1], PlateDone)
    return evs, [e for e in evs if getattr(e, "kind", "") == "answer"], evs[-1]


@pytest.mark.llama
def test_every_field_of_the_sample_has_a_confidence_and_the_stream_agrees(demo, tmp_path):
    from runtime.tasks.read_plate import PlateField, log_done, stream_event
    evs, steps, done = _read(demo, _load(demo, SAMPLE))
    conf = done.confidence
    assert set(conf) == set(FIELD_KEYS) and all(c is not None and 0 < c <= 1 for c in conf.values()), conf
    assert done.reading.confidence is conf
    # every answer token is listed once, with a logprob, and the texts join to the raw answer
    pieces = [p for s in steps for p in s.pieces]
    assert "".join(p.text for p in pieces) == done.raw
    assert len(pieces) == done.last.completion_tokens and all(p.logprob is not None and p.logprob <= 0 for p in pieces)
    assert all(s.logprob == pytest.approx(sum(p.logprob for p in s.pieces)) for s in steps if s.pieces)
    streamed = {e.key: e.confidence for e in evs if isinstance(e, PlateField)}
    assert streamed == conf
    assert [e["confidence"] for e in map(stream_event, evs) if e and e["type"] == "field"] == list(streamed.values())
    assert stream_event(done)["reading"]["confidence"] == conf == stream_event(done)["confidence"]
    log = tmp_path / "readings.jsonl"
    assert log_done(log, done, photo="p.jpg", photo_sha256="0", model="m", mmproj="p", quant=None)
    assert plate.read_log(log)[0]["confidence"] == conf


@pytest.mark.llama
def test_pieces_join_to_the_text_when_a_character_spans_tokens(demo):
    """Each token is listed once, with its logprob; a token that ends inside a UTF-8 character
    adds "" and the one completing it carries the character."""
    from runtime.engine.generate import Timings, decode_stream

    class Scripted:       # the tokens to emit (the model's logits still give their logprobs)
        grammar = None

        def __init__(self, toks):
            self.toks = list(toks)

        def sample(self, ctx, row=-1):
            return self.toks.pop(0)

    pair = demo.pair
    ids = pair.tokenize_text("Ø1 额定 é", parse_special=False)
    # the test means something only if some token's bytes stop inside a character
    assert any(not _whole_utf8(pair.token_piece(t)) for t in ids)
    n_past, pt, _ = demo.session(None)._prefill("hello", Timings())
    steps = list(decode_stream(pair, Scripted(ids + [pair.token_id("<|endoftext|>")]), n_past, max_tokens=50,
                               prompt_tokens=pt, timings=Timings(), logprobs=True))
    pieces = [p for s in steps for p in s.pieces]
    assert "".join(s.text for s in steps) == "Ø1 额定 é" == "".join(p.text for p in pieces)
    assert [p.token for p in pieces] == ids and all(p.logprob is not None and p.logprob <= 0 for p in pieces)
    assert any(p.text == "" for p in pieces) and all("".join(p.text for p in s.pieces) == s.text for s in steps)


def _whole_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.llama
def test_a_cached_reading_keeps_its_confidences(demo, tmp_path):
    """The answer cache stores the tokens with their logprobs and replays them; an answer cached
    without them (asked without logprobs) is generated again rather than shown without confidences."""
    from runtime.engine.answer_cache import AnswerCache
    from runtime.engine.generate import collect
    from runtime.engine.sampling import SamplingOptions
    from runtime.tasks.read_plate import plate_sampling
    img = _load(demo, SAMPLE)
    demo.answer_cache = AnswerCache(tmp_path / "cache")
    try:
        _, _, first = _read(demo, img, use_cache=True)
        _, _, again = _read(demo, img, use_cache=True)
        assert not first.last.cached and again.last.cached          # the second is the cache's
        assert again.confidence == first.confidence and None not in again.confidence.values()
        demo.answer_cache = AnswerCache(tmp_path / "cache2")
        collect(demo.session(img).ask(plate.PROMPT, max_tokens=1024, sampling=plate_sampling(SamplingOptions())))
        _, _, fresh = _read(demo, img, use_cache=True)
        assert not fresh.last.cached and fresh.confidence == first.confidence
    finally:
        demo.answer_cache = None


@pytest.mark.llama
def test_jump_forward_reads_each_token_from_the_row_that_chose_it(demo):
    """A forced token's logprob comes from its verification row: with and without jump-forward the
    tokens' logprobs agree (a row off by one would give the next token's probability instead)."""
    img = _load(demo, SAMPLE)
    _, plain, d0 = _read(demo, img, jump=False)
    _, jumped, d1 = _read(demo, img, jump=True)
    assert d1.last.timings.forced > 0 and d0.raw == d1.raw
    a, b = [p for s in plain for p in s.pieces], [p for s in jumped for p in s.pieces]
    assert [p.token for p in a] == [p.token for p in b]
    assert np.allclose([p.logprob for p in a], [p.logprob for p in b], atol=1e-3)
    # negative control: the same logprobs shifted by one token do not agree
    assert not np.allclose([p.logprob for p in a[1:]], [p.logprob for p in b[:-1]], atol=1e-3)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from runtime.app.server import app as server
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLMV_PHOTO_MEMORY", "0")
        h = server.run("127.0.0.1", 0, model_dir=ROOT / "assets" / "models" / "glmv-plates",
                       data_dir=tmp_path_factory.mktemp("data"))
        for _ in range(600):
            if requests.get(h.url + "api/status", timeout=10).json()["state"] != "loading":
                break
            time.sleep(0.05)
    yield h
    h.stop()


def _plate_request(**extra) -> dict:
    uri = "data:image/jpeg;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()
    return {"model": "glmv", "temperature": 0, "max_tokens": 1024, "logprobs": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "plate", "schema": plate.SCHEMA}},
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                                      {"type": "text", "text": plate.PROMPT}]}], **extra}


@pytest.mark.llama
def test_v1_logprobs_give_the_in_process_confidences(demo, srv):
    r = requests.post(srv.url + "v1/chat/completions", json=_plate_request(), timeout=120)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert all(set(c) == {"token", "logprob", "bytes", "top_logprobs"} and c["top_logprobs"] == []
               and c["logprob"] <= 0 and all(0 <= b < 256 for b in c["bytes"]) for c in content)
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    remote = field_confidences(pieces_from_openai(content))
    _, _, done = _read(demo, _load(demo, SAMPLE))
    assert json.loads(choice["message"]["content"]) == json.loads(done.raw)
    assert remote == pytest.approx(done.confidence, rel=1e-6)
    # streamed: the chunks' logprobs are the same tokens
    with requests.post(srv.url + "v1/chat/completions", json=_plate_request(stream=True), stream=True, timeout=120) as s:
        chunks = [json.loads(x[6:]) for x in s.iter_lines(decode_unicode=True)
                  if x.startswith("data: ") and x != "data: [DONE]"]
    streamed = [c for ch in chunks for ch0 in ch["choices"] for c in (ch0.get("logprobs") or {}).get("content", [])]
    assert streamed == content
    # without logprobs there are none; top_logprobs > 0 and logprobs with stop are refused, by name
    plain = requests.post(srv.url + "v1/chat/completions", json=_plate_request(logprobs=False), timeout=120).json()
    assert plain["choices"][0]["logprobs"] is None
    for extra, param in (({"top_logprobs": 2}, "top_logprobs"), ({"stop": "}"}, "stop"), ({"logprobs": "yes"}, "logprobs")):
        bad = requests.post(srv.url + "v1/chat/completions", json=_plate_request(**extra), timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, (extra, bad.text)


@pytest.mark.llama
def test_app_read_plate_answer_carries_the_confidences(demo, srv):
    up = requests.post(srv.url + "api/sessions", files={"photo": ("p.jpg", SAMPLE.read_bytes(), "image/jpeg")})
    sid = up.json()["session_id"]
    out = requests.post(srv.url + f"api/sessions/{sid}/read-plate", timeout=120).json()
    _, _, done = _read(demo, _load(demo, SAMPLE))
    assert out["fields"] == done.reading.fields and out["confidence"] == pytest.approx(done.confidence, rel=1e-6)


def _bench():
    spec = importlib.util.spec_from_file_location("plate_confidence_bench", ROOT / "bench" / "plate_confidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.llama
def test_confidence_separates_right_fields_from_wrong_on_held_out_plates(demo, tmp_path):
    from convert.synthetic import plate_task
    from convert.synthetic.plates import write_set
    bench = _bench()
    write_set(tmp_path, 30, seed=plate_task.HELDOUT_SET_SEED, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "plates.jsonl").read_text(encoding="utf-8").splitlines()]
    right, conf = [], []
    for r in rows:
        _, _, done = _read(demo, _load(demo, tmp_path / r["file"]))
        ok = bench.score(r["fields"], done.reading.fields)
        for k in FIELD_KEYS:
            right.append(ok[k])
            conf.append(done.confidence[k])
    right, conf = np.array(right), np.array(conf)
    assert 0 < right.sum() < len(right)           # both kinds are there to separate
    auc = bench.auroc(conf, right)
    assert auc > 0.7, auc
    # negative controls: shuffled confidences do not separate; inverted labels separate backwards
    assert abs(bench.auroc(np.random.default_rng(0).permutation(conf), right) - 0.5) < 0.1
    assert bench.auroc(conf, ~right) < 0.3
