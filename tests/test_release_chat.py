"""Conversations on a release-like checkpoint (``glmv synth --dialect release``): the GLM-4.6V
template renders here exactly as in transformers, the session's cache always equals a fresh
render of the whole conversation, turn 2 with thinking on computes what transformers computes,
and the model's own sampling settings are the runtime's defaults (real llama.cpp throughout)."""
from __future__ import annotations


import numpy as np
import pytest

from support import reference as ref
from conftest import test_image
from runtime.engine import chat_template
from runtime.engine.generate import Timings, decode_stream
from runtime.engine.sampling import SamplingOptions
from runtime.engine.session import ImageItem

IMAGE_SPAN = chat_template.IMAGE_SPAN


@pytest.fixture(scope="module")
def release_ckpt(tmp_path_factory):
    from convert.synthetic.synth import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("rel") / "release", "tiny", seed=0, dialect="release")


@pytest.fixture(scope="module")
def engine(release_ckpt, tmp_path_factory):
    from convert.converter import convert
    from runtime.engine.engine import Engine, EngineOptions
    conv = convert(release_ckpt, tmp_path_factory.mktemp("rel-gguf"), quant="F32", mmproj_quant="F32", progress=False)
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=2048, f32_kv=True, n_threads=2))
    yield eng
    eng.close()


IMG_Q = [{"type": "image"}, {"type": "text", "text": "What is the serial number?"}]
CONVERSATIONS = {
    "one turn": [{"role": "user", "content": IMG_Q}],
    "system + text": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "额定电压？"}],
    "three turns with reasoning": [
        {"role": "user", "content": IMG_Q},
        {"role": "assistant", "content": "SN-1", "reasoning_content": "The plate says SN-1."},
        {"role": "user", "content": [{"type": "text", "text": "And the voltage?"}]},
        {"role": "assistant", "content": "<think>Row two.</think>\n400 V"},
        {"role": "user", "content": [{"type": "text", "text": "Frequency? /nothink"}]}],
}


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_template_renders_as_transformers(engine, release_ckpt, name, thinking):
    messages = CONVERSATIONS[name]
    ours = chat_template.render(engine.template, messages, enable_thinking=thinking, marker=engine.pair.marker)
    theirs = ref.hf_tokenizer(str(release_ckpt)).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=thinking)
    assert ours.replace(engine.pair.marker, IMAGE_SPAN) == theirs
    # the release form: earlier reasoning is dropped, thinking off ends in an empty <think></think>
    if "reasoning" in name:
        assert "The plate says" not in ours and "Row two" not in ours
    assert ours.endswith("<|assistant|>\n<think></think>\n" if not thinking else "<|assistant|>\n")


def test_template_features_hf_gives_templates(engine):
    """loopcontrols, tojson(ensure_ascii=…), {% generation %}: a template using them renders, and
    a template that raises says why."""
    src = ("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{% generation %}"
           "{{ m.content | tojson(ensure_ascii=False) }}|{{ m.content | tojson(ensure_ascii=True) }}"
           "{% endgeneration %}{% endfor %}{{ strftime_now('%Y')|length }}")
    out = chat_template.render(src, [{"role": "user", "content": "电压"}, {"role": "user", "content": "x"}],
                               enable_thinking=False, marker="<__media__>")
    assert out == '"电压"|"\\u7535\\u538b"4'
    import jinja2
    with pytest.raises(jinja2.exceptions.TemplateError, match="no tools"):
        chat_template.render("{{ raise_exception('no tools') }}", [], enable_thinking=False, marker="<m>")


def _items(engine, session, question):
    """What a fresh render of the whole conversation tokenizes to (tokens, the image as one item)."""
    with engine.pair.tokenize(session.prompt(question), [session.image.as_tuple()]) as chunks:
        out = []
        for c in chunks.items:
            out += c.tokens if c.kind == "text" else [ImageItem(session.image_sha256, c.n_pos)]
        return out


class _Script:
    """Plays back a turn the way the real model writes one (reasoning first when thinking)."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def sample(self, ctx):
        return self.tokens.pop(0)

    def accept(self, tok):
        pass

    def close(self):
        pass


def _scripted_turn(engine, session, question, text: str):
    """A turn generated through the real runtime (prefill, decode, remember) whose tokens are
    given: ``text`` as the model would write it, e.g. "<think>…</think>\\nanswer"."""
    pair = engine.pair
    n_past, pt, _ = session._prefill(question, Timings())
    toks = pair.tokenize_text(text, parse_special=True) + [pair.token_id("<|user|>")]
    steps = list(decode_stream(pair, _Script(toks), n_past, max_tokens=200, prompt_tokens=pt, timings=Timings(),
                               thinking=session.enable_thinking, on_token=engine.kv.append))
    record = {"answer": "".join(s.text for s in steps if s.kind == "answer"),
              "reasoning": "".join(s.text for s in steps if s.kind == "reasoning")}
    session._remember(question, record)
    return record


@pytest.mark.parametrize("thinking", [True, False])
def test_cache_always_equals_a_fresh_render(engine, photo, thinking):
    s = engine.session(photo, enable_thinking=thinking)
    turns = [("What is the serial number?", "<think>The plate, row one.</think>\nSN-1" if thinking else "SN-1"),
             ("And the voltage?", "<think>Row two says 400.</think>\n400 V" if thinking else "400 V"),
             ("Frequency?", None)]
    for q, text in turns:
        if text is None:
            s._prefill(q, Timings())
        else:
            rec = _scripted_turn(engine, s, q, text)
            assert rec["answer"].strip() == text.split("\n")[-1]
    # after the last prefill the cache holds exactly the fresh render of the whole conversation
    assert engine.kv == _items(engine, s, turns[-1][0])
    if thinking:   # the generated reasoning was in the cache; the release template drops it
        assert s.messages[1]["reasoning_content"]
        assert "Row two" not in s.prompt("x") and "The plate" not in s.prompt("x")


def test_turn_two_with_thinking_matches_transformers(engine, photo, release_ckpt):
    src = str(release_ckpt)
    s = engine.session(photo, enable_thinking=True)
    _scripted_turn(engine, s, "What is the serial number?", "<think>The plate, row one.</think>\nSN-1")
    q2 = "And the voltage? 额定电压是多少？"
    logits = s.prompt_logits(q2)     # the rows this turn fed after the cached prefix
    fed = s.last_fed_tokens
    img_at = next(i for i, x in enumerate(engine.kv) if isinstance(x, ImageItem))
    assert 0 < fed < len(engine.kv) - img_at - 5, "turn 2 should reuse the cached image and first question"
    assert s.image_encodes == 1
    inputs = ref.image_inputs(src, test_image())
    messages = s._messages_with(q2)
    ids = ref.expand_image_tokens(src, ref.chat_ids(src, messages, enable_thinking=True), inputs["image_grid_thw"])
    hf = ref.logits(src, ids, inputs["pixel_values"], inputs["image_grid_thw"])
    got = np.asarray(logits)[-fed:, :hf.shape[1]]
    err = ref.rel_l2(got, hf[-fed:])
    print(f"turn 2 (thinking, cache cut back to the dropped reasoning): {fed} tokens fed, rel L2 {err:.3g}")
    assert err <= 2e-3, f"turn-2 logits rel L2 {err:.3g}"
    # negative control: transformers given the conversation with the turn-1 reasoning kept (what
    # the old synthetic template rendered, and what the cache held before it was cut back) is
    # far from these rows — so the comparison tells the two renderings apart
    from convert.synthetic.synth import CHAT_TEMPLATE as OLD
    kept = ref.hf_tokenizer(src).apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    enable_thinking=True, chat_template=OLD)
    kept = list(kept["input_ids"] if hasattr(kept, "keys") else kept)
    kept = ref.expand_image_tokens(src, kept, inputs["image_grid_thw"])
    wrong = ref.logits(src, kept, inputs["pixel_values"], inputs["image_grid_thw"])
    bad = ref.rel_l2(got, wrong[-fed:])
    print(f"negative control (reasoning kept): rel L2 {bad:.3g}")
    assert bad > 1e-2


def test_model_defaults_are_the_release_settings(engine):
    assert engine.sampling == SamplingOptions(temperature=0.8, top_p=0.6, top_k=2, repeat_penalty=1.1)


def test_cli_api_and_window_answer_alike(engine, photo):
    """No sampling fields anywhere: the session default, the API's parse and the CLI's parse
    all resolve to the model's own settings (so the three faces give one answer)."""
    from runtime.app.server import openai_api as oai
    from runtime.app.cli import _sampling, build_parser
    a = build_parser().parse_args(["ask", "p.jpg", "q"])
    assert _sampling(a, engine) == engine.sampling
    req = oai.parse_chat({"messages": [{"role": "user", "content": "q"}]}, n_ctx=2048, defaults=engine.sampling)
    assert req.sampling == engine.sampling
    a = build_parser().parse_args(["ask", "p.jpg", "q", "--greedy", "--seed", "9"])
    assert _sampling(a, engine).greedy and _sampling(a, engine).seed == 9
    req = oai.parse_chat({"messages": [{"role": "user", "content": "q"}], "temperature": 0, "top_k": 5,
                          "repetition_penalty": 1.3}, n_ctx=2048, defaults=engine.sampling)
    assert (req.sampling.temperature, req.sampling.top_k, req.sampling.repeat_penalty) == (0, 5, 1.3)
