"""Sampling as the model's authors do it: transformers' order and penalty, the model's own
defaults, seeds, and reasoning budgeted apart from the answer (real llama.cpp throughout)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from runtime.llama.backends import import_llama_cpp
from runtime.engine.generate import Timings, decode_stream
from runtime.engine.sampling import GGUF_DEFAULTS, Sampler, SamplingOptions, model_defaults

RELEASE = SamplingOptions(temperature=0.8, top_p=0.6, top_k=2, repeat_penalty=1.1)   # the model card's


# --- the chain against transformers' logits processors -----------------------------------------

def _apply(chain_builder, logits: np.ndarray) -> np.ndarray:
    """Run llama.cpp samplers (no draw) over ``logits``; the probabilities they leave, by token id."""
    ll = import_llama_cpp()
    params = ll.llama_sampler_chain_default_params()
    chain = ll.llama_sampler_chain_init(params)
    try:
        chain_builder(ll, chain)
        n = len(logits)
        data = (ll.llama_token_data * n)(*[ll.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits)])
        arr = ll.llama_token_data_array(data, n, -1, False)
        ll.llama_sampler_apply(chain, ctypes.byref(arr))
        kept = {data[i].id: data[i].logit for i in range(arr.size)}
    finally:
        ll.llama_sampler_free(chain)
    out = np.full(len(logits), -np.inf)
    for i, x in kept.items():
        out[i] = x
    return _softmax(out)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def _transformers(logits: np.ndarray, history: list[int], opts: SamplingOptions) -> np.ndarray:
    """The distribution transformers' generate() samples from: its own processor list, built from
    a GenerationConfig by generate's own code, so its order is transformers' and not ours."""
    import torch
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin
    cfg = GenerationConfig(do_sample=True, temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k,
                           repetition_penalty=opts.repeat_penalty)
    from types import SimpleNamespace

    class Model(GenerationMixin):   # just enough of a model for generate()'s own processor builder
        config = SimpleNamespace(is_encoder_decoder=False)
        generation_config = cfg
    procs = Model()._get_logits_processor(generation_config=cfg, input_ids_seq_length=len(history),
                                          encoder_input_ids=None, prefix_allowed_tokens_fn=None,
                                          logits_processor=None)
    names = [type(p).__name__ for p in procs]
    assert names == sorted(names, key=ORDER.index), names   # what the test relies on, checked
    ids = torch.tensor([history])
    scores = torch.from_numpy(np.asarray(logits, np.float32)[None].copy())
    for p in procs:
        scores = p(ids, scores)
    return torch.softmax(scores[0].double(), -1).numpy()


ORDER = ["RepetitionPenaltyLogitsProcessor", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
CASES = [RELEASE, SamplingOptions(temperature=1.3, top_p=0.9, top_k=40, repeat_penalty=1.3),
         SamplingOptions(temperature=0.5, top_p=0.95), SamplingOptions(temperature=2.0, top_k=5)]


@pytest.mark.parametrize("opts", CASES, ids=lambda o: o.describe())
def test_chain_matches_transformers_processors(opts):
    rng = np.random.default_rng(0)
    worst = 0.0
    for trial in range(20):
        logits = rng.normal(0, 3, 512).astype(np.float32)
        history = list(rng.integers(0, 512, 40))
        # the likeliest tokens must be among those penalized, or the penalty would change nothing
        history += list(np.argsort(logits)[-3:])
        want = _transformers(logits, [int(t) for t in history], opts)
        got = _apply(lambda ll, ch: Sampler.add_filters(ll, ch, opts, history=history, n_ctx=4096, n_vocab=len(logits)), logits)
        assert set(np.flatnonzero(got > 0)) == set(np.flatnonzero(want > 1e-12)), f"trial {trial}: kept tokens differ"
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"{opts.describe()}: max |p_llama - p_transformers| = {worst:.2e}")
    assert worst < 1e-5


def test_negative_control_the_old_order_differs_from_transformers():
    """The chain this project had (top-p before temperature, no top-k, no penalty) gives another
    distribution on the same logits: proof the comparison above can fail."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 512).astype(np.float32)
    history = [int(t) for t in np.argsort(logits)[-3:]]

    def old(ll, chain):
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(RELEASE.top_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(RELEASE.temperature))
    assert np.abs(_apply(old, logits) - _transformers(logits, history, RELEASE)).max() > 0.05


# --- settings ----------------------------------------------------------------------------------

def test_model_defaults_from_gguf_metadata():
    meta = {"general.sampling.temp": 0.8, "general.sampling.top_p": 0.6, "general.sampling.top_k": 2,
            "general.sampling.penalty_repeat": 1.1}
    assert model_defaults(meta) == RELEASE
    assert model_defaults({}) == SamplingOptions() and model_defaults({}).greedy
    # a damaged value is skipped, an out-of-range set falls back to greedy, never a crash
    assert model_defaults({**meta, "general.sampling.top_k": "two"}).top_k == 0
    assert model_defaults({**meta, "general.sampling.temp": -3.0}).greedy
    assert {k for k, _, _ in GGUF_DEFAULTS} == set(meta)


def test_overrides_and_their_checks():
    assert RELEASE.with_(greedy=True).greedy
    assert RELEASE.with_(top_k=None, seed=7) == SamplingOptions(**{**RELEASE.__dict__, "seed": 7})
    for bad in ({"temperature": -1}, {"top_p": 1.5}, {"top_k": -2}, {"repeat_penalty": 0},
                {"seed": -1}, {"top_k": 2.5}, {"temperature": float("nan")}, {"temperature": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RELEASE.with_(**bad)
    # every setting that changes an answer is in the cache key
    keys = {RELEASE.key(), RELEASE.with_(seed=1).key(), RELEASE.with_(top_k=3).key(),
            RELEASE.with_(repeat_penalty=1.2).key(), RELEASE.with_(json_schema="{}").key()}
    assert len(keys) == 5


# --- on the model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(converted):
    from runtime.engine.engine import Engine, EngineOptions
    conv = converted("F32", "F32")
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=2048))
    yield eng
    eng.close()


def _answer(engine, opts: SamplingOptions, question="Describe the nameplate.") -> str:
    from runtime.engine.generate import collect
    answer, _, _ = collect(engine.session(None).ask(question, max_tokens=24, sampling=opts, use_cache=False))
    return answer


def test_same_seed_same_answer_other_seeds_differ(engine):
    hot = SamplingOptions(temperature=1.0, top_k=50, repeat_penalty=1.1)
    assert _answer(engine, hot.with_(seed=5)) == _answer(engine, hot.with_(seed=5))
    answers = {_answer(engine, hot.with_(seed=s)) for s in range(6)}
    assert len(answers) >= 3, "seeds do not change the draw: the seed is not reaching the sampler"


def test_answers_with_a_seed_are_cached(converted, tmp_path):
    from runtime.engine.engine import Engine, EngineOptions
    conv = converted("F32", "F32")
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=1024, cache_dir=tmp_path / "c"))
    try:
        opts = RELEASE.with_(seed=3)
        first = list(eng.session(None).ask("What is the voltage?", max_tokens=12, sampling=opts))
        again = list(eng.session(None).ask("What is the voltage?", max_tokens=12, sampling=opts))
        other = list(eng.session(None).ask("What is the voltage?", max_tokens=12, sampling=opts.with_(seed=4)))
    finally:
        eng.close()
    assert not first[-1].cached and again[-1].cached and not other[-1].cached
    assert "".join(s.text for s in again) == "".join(s.text for s in first)


class _Reasoner:
    """Plays ``<think>`` then one ordinary token for ever: a model that never stops reasoning.
    llama.cpp still decodes every token; ``accept`` records what the runtime fed itself."""

    def __init__(self, think_open: int, word: int):
        self.first, self.word, self.accepted = think_open, word, []

    def sample(self, ctx):
        tok, self.first = (self.first, None) if self.first is not None else (self.word, None)
        return tok

    def accept(self, tok):
        self.accepted.append(tok)

    def close(self):
        pass


def test_reasoning_budget_closes_the_reasoning_and_the_answer_still_comes(engine):
    pair = engine.pair
    s = engine.session(None, enable_thinking=True)
    n_past, pt, _ = s._prefill("hello", Timings())
    word = pair.tokenize_text("ok", parse_special=False)[0]
    sampler = _Reasoner(pair.token_id("<think>"), word)
    fed = []
    steps = list(decode_stream(pair, sampler, n_past, max_tokens=7, prompt_tokens=pt, timings=Timings(),
                               thinking=True, reasoning_budget=30, on_token=fed.append))
    reasoning = "".join(x.text for x in steps if x.kind == "reasoning")
    answer = "".join(x.text for x in steps if x.kind == "answer")
    close = pair.token_id("</think>")
    assert sampler.accepted == [close], "the runtime must feed </think> itself at the budget"
    assert fed.count(word) == 29 + 7 and fed[fed.index(close) + 1:] == [word] * 7
    assert reasoning and answer, (reasoning, answer)
    assert steps[-1].reasoning_capped and steps[-1].finish_reason == "length"
    # a total cap (the API's max_tokens with thinking on) still ends everything
    s2 = engine.session(None, enable_thinking=True)
    n_past, pt, _ = s2._prefill("hello", Timings())
    steps = list(decode_stream(pair, _Reasoner(pair.token_id("<think>"), word), n_past, max_tokens=7,
                               prompt_tokens=pt, timings=Timings(), thinking=True, reasoning_budget=30, max_total=10))
    assert steps[-1].completion_tokens == 10 and steps[-1].finish_reason == "length"
    assert not steps[-1].reasoning_capped


def test_out_of_range_settings_are_refused_by_their_own_names(capsys):
    """Before any model loads (the CLI exits 2 at once), and as a 400 naming the API's field."""
    from runtime.app.server import openai_api as oai
    from runtime.app.cli import main
    for flags, name in ((["--top-k", "-3"], "--top-k"), (["--temperature", "9"], "--temperature"),
                        (["--repeat-penalty", "0"], "--repeat-penalty"), (["--think", "--think-budget", "-1"],
                                                                          "--think-budget")):
        assert main(["ask", "no-such-photo.jpg", "q", *flags]) == 2
        err = capsys.readouterr().err
        assert name in err and "photo not found" not in err, err
    for field, value in (("repetition_penalty", 0), ("top_k", -1), ("top_p", 2), ("seed", "x"),
                         ("frequency_penalty", 3)):
        with pytest.raises(oai.RequestError, match=field):
            oai.parse_chat({"messages": [{"role": "user", "content": "q"}], field: value}, n_ctx=512)
    with pytest.raises(oai.RequestError, match="thinking"):
        oai.parse_chat({"messages": [{"role": "user", "content": "q"}], "thinking": True,
                        "response_format": {"type": "json_object"}}, n_ctx=512)
