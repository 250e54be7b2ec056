"""The runtime on real llama.cpp (tiny synthetic model): sessions, prompts, generation control."""
from __future__ import annotations


import pytest

from support import reference as ref
from conftest import test_image
from runtime.engine import chat_template
from runtime.engine.engine import Engine, EngineOptions
from runtime.engine.generate import Timings, decode_stream
from runtime.engine.sampling import SamplingOptions
from runtime.engine.session import ContextFullError




@pytest.fixture(scope="module")
def engine(converted):
    conv = converted("F32", "F32")
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=2048, f32_kv=True))
    yield eng
    eng.close()


class Scripted:
    """A sampler that plays back given token ids (llama.cpp still decodes every one of them)."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def sample(self, ctx):
        return self.tokens.pop(0)

    def close(self):
        pass


def _run_script(engine, tokens, thinking=False):
    s = engine.session(None, enable_thinking=thinking)
    n_past, pt, _ = s._prefill("hello", Timings())
    return list(decode_stream(engine.pair, Scripted(tokens), n_past, max_tokens=50, prompt_tokens=pt,
                              timings=Timings(), thinking=thinking))


def _ids(engine, text):
    return engine.pair.tokenize_text(text, parse_special=True)


def test_ask_streams_an_answer(engine, photo):
    steps = list(engine.ask(photo, "What is on the plate?", max_tokens=8, use_cache=False))
    assert steps[-1].finish_reason in ("stop", "length")
    assert steps[-1].prompt_tokens > 24 and steps[-1].timings.image_encode_ms > 0
    assert all(s.kind == "answer" for s in steps)


def test_multi_turn_encodes_the_image_once_and_feeds_only_new_tokens(engine, photo):
    s = engine.session(photo)
    _, _, last = s.ask_all("What is the serial number?", max_tokens=6, use_cache=False)
    assert s.last_fed_tokens == last.prompt_tokens  # first turn: everything, image included
    for q in ("And the voltage?", "额定功率是多少？"):
        prev = last
        _, _, last = s.ask_all(q, max_tokens=6, use_cache=False)
        # nothing before the previous answer is fed again (the random model's answer itself may
        # re-tokenize differently from what it sampled; a real model's re-renders identically)
        assert s.last_fed_tokens <= last.prompt_tokens - prev.prompt_tokens, (s.last_fed_tokens, last.prompt_tokens)
    assert s.image_encodes == 1


def test_follow_up_positions_match_transformers(engine, photo, tiny_ckpt):
    """Turn-2 logits (image in turn 1, M-RoPE positions continuing) vs transformers."""
    src = str(tiny_ckpt)
    s = engine.session(photo)
    s.ask_all("What is the serial number?", max_tokens=6, use_cache=False)
    got = s.prompt_logits("And the rated voltage?")
    messages = s.messages + [{"role": "user", "content": [{"type": "text", "text": "And the rated voltage?"}]}]
    inputs = ref.image_inputs(src, test_image())
    ids = ref.chat_ids(src, messages)
    assert ids.count(ref.hf_model(src).config.image_token_id) == 1
    ids = ref.expand_image_tokens(src, ids, inputs["image_grid_thw"])
    hf = ref.logits(src, ids, inputs["pixel_values"], inputs["image_grid_thw"])
    err = ref.rel_l2(got[:, :hf.shape[1]], hf[-len(got):])
    assert err <= 2e-3, f"turn-2 logits rel L2 {err:.3g}"
    assert s.image_encodes == 1


@pytest.mark.parametrize("thinking", [False, True])
def test_prompt_ids_equal_apply_chat_template(engine, photo, tiny_ckpt, thinking):
    src = str(tiny_ckpt)
    messages = [{"role": "user", "content": "Read the plate."}, {"role": "assistant", "content": "VT-2291"},
                {"role": "user", "content": "铭牌上的额定电压是多少？"}]
    text = chat_template.render(engine.template, messages, enable_thinking=thinking, marker=engine.pair.marker)
    assert _ids(engine, text) == ref.chat_ids(src, messages, enable_thinking=thinking)
    assert text.endswith("<|assistant|>" if thinking else "<|assistant|>\n<think></think>")
    # with an image: mtmd's text chunks + the single <|image|> equal transformers' ids
    s = engine.session(photo, enable_thinking=thinking)
    with engine.pair.tokenize(s.prompt("What is the serial number?"), [photo.as_tuple()]) as chunks:
        t0, _, t1 = chunks.items
        image_id = ref.hf_model(src).config.image_token_id
        hf = ref.chat_ids(src, s._messages_with("What is the serial number?"), enable_thinking=thinking)
        assert t0.tokens + [image_id] + t1.tokens == hf


def test_stops_on_observation_token_id(engine):
    a, b = _ids(engine, "Hello"), _ids(engine, " there")
    obs = engine.pair.token_id("<|observation|>")
    assert engine.pair.token_piece(obs) == b""  # why a stop *string* would never fire
    steps = _run_script(engine, a + b + [obs] + a)
    assert steps[-1].finish_reason == "stop" and steps[-1].completion_tokens == len(a + b)
    assert "".join(s.text for s in steps) == "Hello there"
    for stop in ("<|endoftext|>", "<|user|>"):
        assert _run_script(engine, a + [engine.pair.token_id(stop)])[-1].completion_tokens == len(a)


def test_thinking_is_streamed_separately(engine):
    nl, ans = _ids(engine, "\n"), _ids(engine, "The voltage is 400 V")
    script = nl + [engine.pair.token_id("<think>")] + _ids(engine, "Look at row two.") + \
        [engine.pair.token_id("</think>")] + nl + ans + [engine.pair.token_id("<|user|>")]
    steps = _run_script(engine, script, thinking=True)
    reasoning = "".join(s.text for s in steps if s.kind == "reasoning")
    answer = "".join(s.text for s in steps if s.kind == "answer")
    assert reasoning == "Look at row two." and answer == "The voltage is 400 V"


def test_box_markers_are_stripped(engine):
    box = [engine.pair.token_id("<|begin_of_box|>")] + _ids(engine, "VT-2291") + [engine.pair.token_id("<|end_of_box|>")]
    steps = _run_script(engine, box + [engine.pair.token_id("<|endoftext|>")])
    assert "".join(s.text for s in steps) == "VT-2291"


def test_cancellation_stops_within_one_token_and_session_continues(engine, photo):
    s = engine.session(photo)
    seen = []
    steps = []
    for st in s.ask("Describe the plate.", max_tokens=50, use_cache=False, cancelled=lambda: len(seen) >= 3):
        seen.append(st)
        steps.append(st)
    assert steps[-1].finish_reason == "cancelled" and steps[-1].completion_tokens <= 4
    _, _, last = s.ask_all("Go on.", max_tokens=3, use_cache=False)
    assert last.finish_reason in ("stop", "length") and s.image_encodes == 1


def test_context_full_ends_cleanly_then_refuses(converted, photo):
    conv = converted("F32", "F32")
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=128))
    try:
        s = eng.session(photo)
        _, _, last = s.ask_all("Describe everything.", max_tokens=1000, use_cache=False,
                               sampling=SamplingOptions(temperature=0.8, seed=1))
        assert last.finish_reason in ("context", "stop")
        if last.finish_reason == "context":
            with pytest.raises(ContextFullError, match="start a new session"):
                s.ask_all("And then?", max_tokens=5, use_cache=False)
        # the process and the model are fine: a fresh session still answers
        _, _, ok = eng.session(photo).ask_all("Serial?", max_tokens=2, use_cache=False)
        assert ok.finish_reason in ("stop", "length")
    finally:
        eng.close()


def test_answer_cache_returns_repeats_at_once(converted, photo, tmp_path):
    conv = converted("F32", "F32")
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=1024, cache_dir=tmp_path))
    try:
        a1, _, l1 = eng.session(photo).ask_all("Serial?", max_tokens=6)
        a2, _, l2 = eng.session(photo).ask_all("Serial?", max_tokens=6)
        a3, _, l3 = eng.session(photo).ask_all("Serial?", max_tokens=6, use_cache=False)
        assert (l1.cached, l2.cached, l3.cached) == (False, True, False)
        assert a1 == a2 == a3
        _, _, l4 = eng.session(photo).ask_all("Serial?", max_tokens=6, sampling=SamplingOptions(temperature=0.7))
        assert not l4.cached  # other settings: another answer, not the greedy one from the cache
    finally:
        eng.close()


def test_temperature_sampling_is_seeded(engine, photo):
    opts = SamplingOptions(temperature=1.0, top_p=0.9, seed=42)
    a = engine.session(photo).ask_all("Serial?", max_tokens=8, sampling=opts, use_cache=False)[0]
    b = engine.session(photo).ask_all("Serial?", max_tokens=8, sampling=opts, use_cache=False)[0]
    assert a == b


def test_a_model_load_reads_its_manifest_once(converted, tmp_path, monkeypatch):
    """What `glmv ask --verify` asks about the manifest while one model loads (the pair, the
    photo size, the projector's limit, the checksums, the quant type) comes from one read."""
    import shutil
    from runtime.common import manifest
    from runtime.engine.model_files import manifest_pixel_budget, manifest_quant, pixel_budget_for
    from runtime.engine.model_locator import find_model_files
    conv = converted("Q8_0", "Q8_0")
    for p in (conv.text_path, conv.mmproj_path, conv.manifest_path):
        shutil.copy2(p, tmp_path / p.name)
    reads = []
    real = manifest._read_bytes
    monkeypatch.setattr(manifest, "_read_bytes", lambda path: reads.append(path) or real(path))
    text, mmproj = find_model_files(tmp_path)
    pixel_budget_for(text)
    eng = Engine(text, mmproj, EngineOptions(n_ctx=512, verify=True))
    try:
        assert manifest_quant(text) == "Q8_0" and manifest_pixel_budget(text) is None
        assert eng.manifest is not None and eng.manifest.quant_of(mmproj.name) == "Q8_0"
    finally:
        eng.close()
    assert len(reads) == 1, reads


def test_the_demo_models_manifest_answers_for_the_self_test():
    from runtime.engine.model_locator import demo_manifest, demo_model_manifest, demo_model_files
    from runtime.tasks.demo_check import checked_fields
    m = demo_model_manifest()
    text, mmproj = demo_model_files()
    assert m.pair_names() == (text.name, mmproj.name) and m.pixel_budget == 150528
    as_json = demo_manifest()
    assert checked_fields() == checked_fields(as_json) == checked_fields(m) == as_json["checked_fields"]
    as_json["files"].clear()       # a copy: the next caller still sees the file's content
    assert demo_manifest()["files"] and m.accuracy == demo_manifest()["accuracy"]
