"""read-plate as a stream and decoded with jump-forward, on the real demo model and the
release-like test model: fields reported the moment they are complete (parser, use case, app API,
CLI), Stop keeping what was read (incomplete, not logged), jump-forward giving the same answer
byte for byte with fewer passes (greedy and seeded), and `glmv read-plate` right after `make demo`
(no model installed: the demo model, with its notice)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from runtime.tasks import plate
from runtime.tasks.plate_parser import FieldParser

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "assets" / "samples").glob("*.jpg"))


# --- the incremental parser -------------------------------------------------------------------
def _plate_doc(rng: random.Random) -> dict:
    pick = ["ACME \"Motors\"", "Ø 12\\3", "380-415 V", "额定 50 Hz", "", "IP55", "a,b:c}{]["]
    doc = {k: (None if rng.random() < 0.3 else rng.choice(pick)) for k, _ in plate.FIELDS}
    doc["other"] = [{"name": rng.choice(pick), "value": rng.choice(pick)} for _ in range(rng.randrange(3))]
    return doc


@pytest.mark.parametrize("seed", range(20))
def test_parser_reports_each_field_once_complete_in_order(seed):
    rng = random.Random(seed)
    doc = _plate_doc(rng)
    text = "\n" + json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    p, got, i = FieldParser(), [], 0
    while i < len(text):
        k = rng.randint(1, 6)
        for key, value in p.feed(text[i:i + k]):
            got.append((key, value))
            # reported only once the text holds the whole value (the next piece cannot change it)
            assert json.loads(json.dumps(value)) == doc[key]
        i += k
    assert got == list(doc.items())
    assert p.closed


def test_parser_never_reports_a_value_still_being_written():
    """Negative control: an answer cut inside a value reports the fields before it, not that one."""
    doc = {"manufacturer": "ACME", "model": "X-1000 long", "serial_number": None}
    text = json.dumps(doc)
    cut = text[:text.index("long") + 2]           # inside the model's value
    got = FieldParser().feed(cut)
    assert got == [("manufacturer", "ACME")]
    cut_null = text[:text.index("null") + 3]      # "nul": not yet null
    assert [k for k, _ in FieldParser().feed(cut_null)] == ["manufacturer", "model"]


def test_the_readings_log_keeps_a_value_with_a_unicode_line_separator(tmp_path):
    """A value read off a plate may hold U+2028 or U+0085 (json.dumps writes them raw): the log is
    one record per "\n", so such a reading is kept whole (str.splitlines() would cut it in two)."""
    log = tmp_path / "readings.jsonl"
    for value in ("A\u2028B", "C\x85D", "plain"):
        plate.append_log(log, {"fields": {"model": value}})
    assert [r["fields"]["model"] for r in plate.read_log(log)] == ["A\u2028B", "C\x85D", "plain"]
    # negative control: reading it the old way loses the two records
    old = []
    for ln in log.read_text(encoding="utf-8").splitlines():
        try:
            old.append(json.loads(ln))
        except ValueError:
            pass
    assert len(old) == 1


# --- the models ---------------------------------------------------------------------------------
def _engine(text, mmproj, **kw):
    from runtime.engine.engine import Engine, EngineOptions
    return Engine(text, mmproj, EngineOptions(n_ctx=4096, n_threads=2, photo_memory_bytes=0, **kw))


@pytest.fixture(scope="module")
def demo():
    from runtime.engine.model_locator import demo_model_files
    files = demo_model_files()
    eng = _engine(files.text, files.mmproj)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from convert.converter import convert
    from convert.synthetic.synth import make_checkpoint
    ckpt = make_checkpoint(tmp_path_factory.mktemp("rel") / "release", "tiny", seed=0, dialect="release")
    conv = convert(ckpt, tmp_path_factory.mktemp("rel-gguf"), quant="Q8_0", mmproj_quant="Q8_0", progress=False)
    eng = _engine(conv.text_path, conv.mmproj_path)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    """The 4 sample plates and 4 generated ones, as prepared photos."""
    from convert.synthetic.plates import write_set
    from runtime.engine import images
    from runtime.engine.model_files import pixel_budget_for
    from runtime.engine.model_locator import demo_model_files
    out = tmp_path_factory.mktemp("plates")
    write_set(out, 4, seed=11, progress=False)
    budget = pixel_budget_for(demo_model_files().text)
    photos = SAMPLES + sorted(out.glob("plate-*.jpg"))
    return [(p.name, images.load(p, pixel_budget=budget)) for p in photos]


def _read(eng, img, sampling, *, jump: bool, max_tokens: int = 700, cancel_after: int | None = None):
    """One reading through the use case: (events, the PlateDone)."""
    from runtime.tasks.read_plate import PlateDone, PlateField, read_plate_events
    eng.jump_forward = jump
    n_fields = [0]

    def cancelled():
        return cancel_after is not None and n_fields[0] >= cancel_after
    events = []
    for ev in read_plate_events(eng.session(img), sampling=sampling, max_tokens=max_tokens, use_cache=False,
                                cancelled=cancelled, progress=False):
        events.append(ev)
        n_fields[0] += isinstance(ev, PlateField)
    done = events[-1]
    assert isinstance(done, PlateDone)
    return events, done


def _sampling(eng, **kw):
    from runtime.engine.sampling import SamplingOptions
    from runtime.tasks.read_plate import plate_sampling
    return plate_sampling(SamplingOptions(**kw))


# --- the stream -------------------------------------------------------------------------------
def test_fields_stream_before_the_end_and_equal_the_reading(demo, plates):
    from runtime.tasks.read_plate import PlateDecode, PlateField
    events, done = _read(demo, plates[0][1], _sampling(demo), jump=True)
    assert done.complete and done.last.finish_reason == "stop"
    fields = [e for e in events if isinstance(e, PlateField)]
    assert [f.key for f in fields] == [k for k, _ in plate.FIELDS] + ["other"]
    assert {f.key: f.value for f in fields} == done.reading.fields
    # each field came while the answer was still being written: tokens followed it
    steps = [i for i, e in enumerate(events) if getattr(e, "kind", "") == "answer"]
    first_field = events.index(fields[0])
    assert first_field < steps[-1] - 10
    decodes = [e for e in events if isinstance(e, PlateDecode)]
    assert decodes and decodes[-1].fields_done >= 1 and decodes[-1].eta_s is not None


def test_stop_keeps_what_was_read_marked_incomplete_and_not_logged(demo, plates, tmp_path):
    from runtime.tasks.read_plate import PlateField, log_done
    _, full = _read(demo, plates[0][1], _sampling(demo), jump=True)
    events, done = _read(demo, plates[0][1], _sampling(demo), jump=True, cancel_after=3)
    got = [e.key for e in events if isinstance(e, PlateField)]
    assert len(got) == 3 and not done.complete and done.last.finish_reason == "cancelled"
    assert all(done.reading.fields[k] == full.reading.fields[k] for k in got)
    assert all(done.reading.fields[k] is None for k, _ in plate.FIELDS if k not in got)
    assert done.reading.warnings[0].startswith("incomplete: the reading was stopped after 3 of 18 fields")
    log = tmp_path / "readings.jsonl"
    assert log_done(log, done, photo="p", photo_sha256="0", model="m", mmproj="mm", quant=None) is False
    assert not log.exists()
    assert log_done(log, full, photo="p", photo_sha256="0", model="m", mmproj="mm", quant=None) is True
    assert len(plate.read_log(log)) == 1


# --- jump-forward -------------------------------------------------------------------------------
# What "the same answer" allows: a batch of k tokens and k single-token passes agree bit for bit in
# this build for almost every row (flash attention is off in the text model for this reason, see
# runtime/llama/pair.py), but not for every one; where a row's logits differ by rounding, a seeded
# draw can fall on the other side of a boundary. Such a difference is reported with the size of the
# rounding at the step where the two answers part (ROUNDING_LIMIT bounds it), never hidden.
ROUNDING_LIMIT = 0.1


class _Capture:
    """Records each sampled token and a hash of the logits it was drawn from; with ``at`` set,
    also keeps that sample's logits row."""

    def __init__(self, monkeypatch, at: int | None = None):
        import hashlib
        import numpy as np
        from runtime.engine.sampling import Sampler
        self.tokens, self.hashes, self.row = [], [], None
        real = Sampler.sample

        def sample(sampler, ctx, row=-1):
            n = sampler.ll.llama_vocab_n_tokens(sampler.ll.llama_model_get_vocab(sampler.ll.llama_get_model(ctx)))
            logits = np.ctypeslib.as_array(sampler.ll.llama_get_logits_ith(ctx, row), shape=(n,))
            if at is not None and len(self.tokens) == at:
                self.row = logits.copy()
            self.hashes.append(hashlib.md5(logits.tobytes()).hexdigest())
            tok = real(sampler, ctx, row)
            self.tokens.append(tok)
            return tok
        monkeypatch.setattr(Sampler, "sample", sample)


def _compare(eng, img, kw, monkeypatch) -> tuple[bool, float, dict]:
    """Jump-forward off and on: (same answer, rounding where they part (0 if same), the timings)."""
    import numpy as np
    runs = {}
    for jump in (False, True):
        cap = _Capture(monkeypatch)
        _, done = _read(eng, img, _sampling(eng, **kw), jump=jump)
        runs[jump] = (done, cap)
    (off, c_off), (on, c_on) = runs[False], runs[True]
    t = {j: runs[j][0].last.timings for j in runs}
    for j, (done, _) in runs.items():
        # every pass samples one token and keeps the forced tokens its rows confirmed
        assert t[j].passes + t[j].forced == done.last.completion_tokens
    if on.raw == off.raw:
        return True, 0.0, t
    i = next(k for k, (a, b) in enumerate(zip(c_off.tokens, c_on.tokens)) if a != b)
    rows = []
    for jump in (False, True):   # again, keeping the logits of the step where they part
        cap = _Capture(monkeypatch, at=i)
        _read(eng, img, _sampling(eng, **kw), jump=jump)
        rows.append(cap.row)
    return False, float(np.abs(rows[0] - rows[1]).max()), t


@pytest.mark.parametrize("which", ["demo", "release"])
def test_jump_forward_gives_the_same_answer_in_fewer_passes(which, request, plates, monkeypatch):
    eng = request.getfixturevalue(which)
    settings = [{}, {"temperature": 1.0, "seed": 3}, {"temperature": 0.8, "top_k": 40, "seed": 7}]
    passes = {True: 0, False: 0}
    parted = []
    n = 0
    for name, img in plates[:5] if which == "release" else plates:
        for kw in settings:
            same, rounding, t = _compare(eng, img, kw, monkeypatch)
            n += 1
            passes[False] += t[False].passes
            passes[True] += t[True].passes
            assert t[False].forced == 0 and t[True].forced > 0
            if not same:
                parted.append((name, kw, rounding))
                assert kw, f"{name}: greedy answers differ with jump-forward (rounding {rounding:.3g})"
                assert 0 < rounding <= ROUNDING_LIMIT, (name, kw, rounding)
    saved = 1 - passes[True] / passes[False]
    print(f"\n{which}: {passes[False]} passes without jump-forward, {passes[True]} with ({saved:.0%} fewer); "
          f"{n - len(parted)}/{n} answers identical; parted at a rounding near-tie: {parted}")
    assert len(parted) <= n // 3   # a random-weight model's flat distributions part more often than a trained one's
    assert saved >= 0.30


def test_a_wrong_draft_is_caught_by_verification(demo, plates, monkeypatch):
    """Negative control: a drafter whose tokens are wrong (shifted ids) changes nothing in the
    answer — every one of its tokens is rejected by the model's own samples."""
    from runtime.engine import jump_forward
    real = jump_forward.Drafter.draft
    monkeypatch.setattr(jump_forward.Drafter, "draft", lambda self, limit: [t + 1 for t in real(self, limit)])
    _, plain = _read(demo, plates[1][1], _sampling(demo), jump=False)
    _, wrong = _read(demo, plates[1][1], _sampling(demo), jump=True)
    assert wrong.raw == plain.raw
    assert wrong.last.timings.rejected > 0 and wrong.last.timings.forced == 0


def test_fixed_separators_are_how_the_demo_model_writes(demo, plates):
    """The grammar now fixes ", " and ": " (so jump-forward may feed them): on the demo model the
    answers are the ones it gave with the free-space grammar."""
    from runtime.engine.sampling import SamplingOptions
    free = SamplingOptions(json_schema=json.dumps(plate.SCHEMA))
    for name, img in plates:
        _, old = _read(demo, img, free, jump=False)
        _, new = _read(demo, img, _sampling(demo), jump=False)
        assert new.raw == old.raw, name
        assert json.dumps(json.loads(new.raw), ensure_ascii=False) == new.raw.strip()


def test_json_schema_requests_jump_forward_too(demo, plates):
    """An API-style json_schema request (free spacing) also gets forced keys fed in batches."""
    from runtime.engine.sampling import SamplingOptions
    from runtime.engine.generate import collect
    schema = json.dumps({"type": "object", "properties": {"serial_number": {"type": "string", "maxLength": 20},
                                                          "voltage": {"type": "string", "maxLength": 12}},
                         "required": ["serial_number", "voltage"], "additionalProperties": False})
    out = {}
    for jump in (False, True):
        demo.jump_forward = jump
        out[jump] = collect(demo.session(plates[0][1]).ask("Serial number and voltage as JSON.", max_tokens=80,
                                                           sampling=SamplingOptions(json_schema=schema), use_cache=False))
    assert out[True][0] == out[False][0]
    assert out[True][2].timings.forced > 0 and out[True][2].timings.passes < out[False][2].timings.passes


# --- the faces: app API and CLI -----------------------------------------------------------------
def _cli(*args, data_dir, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLMV_DATA_DIR=str(data_dir), GLMV_MODEL_DIR=str(data_dir / "none"))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "runtime.app.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_read_plate_after_make_demo_uses_the_demo_model_and_streams(tmp_path):
    """No model installed (a fresh data folder): read-plate reads with the demo model and says so;
    --stream gives each field as a JSON line before the reading's 'done' line."""
    r = _cli("read-plate", str(SAMPLES[0]), "--stream", "--no-cache", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no model installed: using the built-in demo model" in r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    kinds = [x["type"] for x in lines]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and kinds.count("field") == 18
    assert kinds.index("field") < kinds.index("done")
    done = lines[-1]
    assert not done["incomplete"] and done["passes"] + done["forced_tokens"] == done["completion_tokens"]
    assert {x["key"]: x["value"] for x in lines if x["type"] == "field"} == done["reading"]["fields"]
    # --json stays one object per photo; a named model folder that does not exist is still an error
    r2 = _cli("read-plate", str(SAMPLES[0]), "--json", "--no-cache", data_dir=tmp_path)
    assert r2.returncode == 0 and json.loads(r2.stdout)["fields"] == done["reading"]["fields"]
    r3 = _cli("read-plate", str(SAMPLES[0]), "--model-dir", str(tmp_path / "missing"), data_dir=tmp_path)
    assert r3.returncode != 0 and "model folder not found" in r3.stderr


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """`glmv serve` on the demo model with one thread under a real CPU quota (10 % of a core): the
    demo model reads as slowly as on a weak laptop, so Stop lands mid-answer."""
    from support.serve import CPU_CGROUPS, cpu_quota, start_serve, stop_serve, wait_ready
    if not CPU_CGROUPS.is_dir():
        pytest.skip(f"no cgroup-v1 CPU controller at {CPU_CGROUPS}: cannot slow the server down")
    p, url = start_serve(ROOT / "assets" / "models" / "glmv-plates", tmp_path_factory.mktemp("data"), "--threads", "1",
                          "--no-cache")
    try:
        wait_ready(url, timeout=180)
        with cpu_quota(p.pid, 10):
            yield url
    finally:
        stop_serve(p)


def _events(resp):
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            yield json.loads(line[6:])


def test_api_streams_fields_and_stop_keeps_them_unlogged(slow_server):
    url = slow_server
    sid = requests.post(url + "api/sessions", files={"photo": ("p.jpg", SAMPLES[0].read_bytes(), "image/jpeg")}
                        ).json()["session_id"]
    with requests.post(url + f"api/sessions/{sid}/read-plate", json={"stream": True}, stream=True, timeout=300) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        ev = list(_events(r))
    kinds = [e["type"] for e in ev]
    assert kinds[-1] == "done" and kinds.count("field") == 18 and "progress" in kinds and "decode" in kinds
    assert ev[-1]["logged"] and not ev[-1]["incomplete"]
    assert ev[-1]["passes"] + ev[-1]["forced_tokens"] == ev[-1]["completion_tokens"]
    n_logged = len(requests.get(url + "api/readings").json())
    # Stop after the second field: the stream ends with what was read, marked incomplete, unlogged
    with requests.post(url + f"api/sessions/{sid}/read-plate", json={"stream": True}, stream=True, timeout=300) as r:
        got = []
        for e in _events(r):
            got.append(e)
            if e["type"] == "field" and sum(x["type"] == "field" for x in got) == 2:
                assert requests.post(url + f"api/sessions/{sid}/cancel").json()["cancelled"]
    done = got[-1]
    assert done["type"] == "done" and done["incomplete"] and not done["logged"]
    fields = [e for e in got if e["type"] == "field"]
    assert 2 <= len(fields) < 18
    assert all(done["reading"]["fields"][e["key"]] == e["value"] for e in fields)
    assert done["reading"]["warnings"][0].startswith("incomplete: ")
    assert len(requests.get(url + "api/readings").json()) == n_logged
    # without "stream": one JSON reading, as before
    plain = requests.post(url + f"api/sessions/{sid}/read-plate", timeout=300)
    assert plain.status_code == 200 and plain.json()["fields"] == ev[-1]["reading"]["fields"]
