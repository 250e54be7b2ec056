"""JSON output always parses: the schema constraint fuzzed at temperature 1.0 on random-weight models.

Random weights at temperature 1.0 are the hard case: every token the constraint lets through gets
drawn sooner or later, byte fragments and control tokens included. For read-plate (the CLI's own
function), ``json_schema`` and ``json_object`` (the schemas the API builds), every answer that
ends on its own must parse with strict ``json.loads`` and validate; an answer cut by
``max_tokens`` says "length" and is counted apart (and must still hold no control characters,
U+FFFD or box markers). Negative controls fail the same check: the grammar llama-cpp-python's
converter writes, each part of the fix alone, and the fix without its narrowing of string
patterns. The box markers are forced with a logit bias and must never show in an answer nor
land inside JSON, whatever type the GGUF gives them.
"""
from __future__ import annotations

import codecs
import io
import json
import shutil
from collections import Counter

import jsonschema
import numpy as np
import pytest
import requests
from PIL import Image

from conftest import test_image
from runtime.engine import grammar
from runtime.engine import images
from runtime.tasks import plate
from runtime.engine.engine import Engine, EngineOptions
from runtime.engine.generate import Timings, collect, decode_stream
from runtime.engine.sampling import SamplingOptions

SEEDS = range(200)
SERIAL = {"type": "object", "properties": {"serial": {"type": "string", "maxLength": 20}},
          "required": ["serial"], "additionalProperties": False}
OBJECT = {"type": "object"}                     # what server_openai makes of json_object
# string patterns: "." and negated classes would admit quotes and control characters raw
PATTERNS = {"type": "object", "properties": {"any": {"type": "string", "pattern": "^.{0,12}$"},
                                             "ascii": {"type": "string", "pattern": "^[ -~]{1,12}$"},
                                             "not_a": {"type": "string", "pattern": "^[^a]{1,12}$"}},
            "required": ["any", "ascii", "not_a"], "additionalProperties": False}
# mode -> (schema, question, max_tokens): json_object has no size bound, so many answers are cut
MODES = {"json_schema": (SERIAL, "Serial number as JSON", 64),
         "json_object": (OBJECT, "Reply with a JSON object", 128),
         "json_schema_patterns": (PATTERNS, "Serial number as JSON", 96)}
BOX = ("<|begin_of_box|>", "<|end_of_box|>")


def _engine(text, mmproj) -> Engine:
    # one thread: a model this small decodes faster without thread hand-offs
    return Engine(text, mmproj, EngineOptions(n_ctx=4096, n_threads=1))


@pytest.fixture(scope="module")
def models(converted, tmp_path_factory):
    """Two random-weight tiny models (synthetic checkpoints of seeds 0 and 1)."""
    from convert.converter import convert
    from convert.synthetic.synth import make_checkpoint
    conv0 = converted("F32", "F32")
    ck1 = make_checkpoint(tmp_path_factory.mktemp("ckpt-seed1") / "tiny", "tiny", seed=1)
    conv1 = convert(ck1, tmp_path_factory.mktemp("gguf-seed1"), quant="F32", mmproj_quant="F32", progress=False)
    engines = [_engine(c.text_path, c.mmproj_path) for c in (conv0, conv1)]
    yield engines
    for e in engines:
        e.close()


@pytest.fixture(scope="module")
def photo():
    buf = io.BytesIO()
    Image.fromarray(test_image()).save(buf, "PNG")
    return images.prepare(buf.getvalue(), name="test.png")


def verdict(raw: str, finish: str, schema: dict) -> str:
    """ "ok", "length" (cut, counted apart) or "bad: <cause>"; the first answer of each bad cause
    is kept in EXAMPLES for the failure message."""
    if finish != "stop":
        cause = None if clean(raw) else "bad: a cut answer holds foreign characters"
    else:
        try:
            jsonschema.validate(json.loads(raw), schema)   # strict: raw control characters refused
            cause = None if clean(raw) else "bad: U+FFFD or a box marker in valid JSON"
        except json.JSONDecodeError as e:
            cause = ("bad: control character in a string" if "control character" in e.msg else
                     "bad: JSON not closed" if e.msg.startswith(("Expecting", "Unterminated")) else f"bad: {e.msg}")
        except jsonschema.ValidationError as e:
            cause = f"bad: does not validate ({e.validator})"
    if cause is None:
        return "ok" if finish == "stop" else finish
    EXAMPLES.setdefault(cause, raw[:160])
    return cause


EXAMPLES: dict[str, str] = {}


def clean(text: str) -> bool:
    """No C0 control but the newline the grammar allows, no U+FFFD, no box markers."""
    return not any((ord(c) < 0x20 and c != "\n") or c == "\ufffd" for c in text) and not any(m in text for m in BOX)


def fuzz(eng: Engine, mode: str, seeds=SEEDS) -> Counter:
    schema, question, max_tokens = MODES[mode]
    tally: Counter = Counter()
    for seed in seeds:
        raw, _, last = collect(eng.session(None).ask(question, max_tokens=max_tokens, use_cache=False,
                                                     sampling=SamplingOptions(temperature=1.0, seed=seed,
                                                                              json_schema=json.dumps(schema))))
        tally[verdict(raw, last.finish_reason, schema)] += 1
    return tally


def _bad(tally: Counter) -> dict:
    """The bad causes of a tally, each with its count and first example."""
    return {k: (v, EXAMPLES.get(k)) for k, v in tally.items() if k.startswith("bad")}


# --- the fuzz -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("model", [0, 1])
def test_every_finished_answer_parses_and_validates(models, mode, model):
    tally = fuzz(models[model], mode)
    print(f"\nmodel seed {model}, {mode}: {dict(tally)}")
    assert not _bad(tally), _bad(tally)
    assert tally["ok"] >= 40, tally        # not vacuous: many answers end on their own
    assert tally["ok"] + tally["length"] == len(SEEDS)


def test_read_plate_always_parses_and_validates(models, photo, tmp_path):
    """read-plate through the CLI's own function; a cut answer carries the CLI's warning."""
    from runtime.tasks.read_plate import read_plate_photo
    path = tmp_path / "plate.png"
    Image.fromarray(test_image()).save(path)
    tally: Counter = Counter()
    for seed in SEEDS:
        sampling = SamplingOptions(temperature=1.0, seed=seed, json_schema=json.dumps(plate.SCHEMA))
        r, last = read_plate_photo(models[0], path, photo, sampling=sampling, max_tokens=700, use_cache=False,
                                   log=tmp_path / "readings.jsonl", quant=None)
        v = verdict(r.raw, last.finish_reason, plate.SCHEMA)
        tally[v] += 1
        if v == "length":
            assert any("cut at 700 tokens" in w for w in r.warnings), r.warnings
        else:
            assert not any("not complete JSON" in w for w in r.warnings), (v, r.warnings)
    print(f"\nread-plate: {dict(tally)}")
    assert not _bad(tally), _bad(tally)
    assert tally["ok"] >= 150, tally
    # one record per "\n": a value may hold U+2028 or U+0085, which str.splitlines() also splits on
    lines = (tmp_path / "readings.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert len(lines) == len(SEEDS) and all(json.loads(x)["raw"] for x in lines)


def test_a_cut_answer_says_length(models, photo, tmp_path):
    from runtime.tasks.read_plate import read_plate_photo
    path = tmp_path / "plate.png"
    Image.fromarray(test_image()).save(path)
    r, last = read_plate_photo(models[0], path, photo, max_tokens=12, use_cache=False, log=tmp_path / "r.jsonl",
                               quant=None, sampling=SamplingOptions(temperature=1.0, json_schema=json.dumps(plate.SCHEMA)))
    assert last.finish_reason == "length"
    assert any("cut at 12 tokens" in w for w in r.warnings), r.warnings


# --- negative controls: the converter's grammar, and each half of the fix alone ------------------
def _add_grammar(ll, vocab, chain, gbnf: str) -> None:
    ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_grammar(vocab, gbnf.encode(), grammar.ANSWER_RULE.encode()))


def stock_grammar(schema: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    return json_schema_to_gbnf(schema) + f"\n{grammar.ANSWER_RULE} ::= \"\\n\"? root\n"


def before_the_fix(ll, vocab, chain, schema, fixed_separators=False):
    _add_grammar(ll, vocab, chain, stock_grammar(schema))


def strict_char_only(ll, vocab, chain, schema, fixed_separators=False):
    _add_grammar(ll, vocab, chain, grammar.schema_to_gbnf(schema))


def guard_only(ll, vocab, chain, schema, fixed_separators=False):
    grammar.add_guard(ll, vocab, chain)
    _add_grammar(ll, vocab, chain, stock_grammar(schema))


def patterns_not_narrowed(ll, vocab, chain, schema, fixed_separators=False):
    """The whole fix but for the narrowing of string patterns."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    grammar.add_guard(ll, vocab, chain)
    gbnf = grammar._CHAR_RULE.sub(lambda _: grammar.STRICT_CHAR, json_schema_to_gbnf(schema))
    _add_grammar(ll, vocab, chain, gbnf + f"\n{grammar.ANSWER_RULE} ::= \"\\n\"? root\n")


@pytest.mark.parametrize("constraint, mode", [(before_the_fix, "json_schema"), (strict_char_only, "json_schema"),
                                              (guard_only, "json_schema"),
                                              (patterns_not_narrowed, "json_schema_patterns")],
                         ids=lambda v: getattr(v, "__name__", v))
def test_negative_control_fails_the_same_check(models, monkeypatch, constraint, mode):
    monkeypatch.setattr(grammar, "add_json_constraint", constraint)   # what Sampler calls
    tally = fuzz(models[0], mode)
    print(f"\n{constraint.__name__}, {mode}: {dict(tally)}")
    assert sum(n for n, _ in _bad(tally).values()) >= 3, tally


@pytest.mark.parametrize("pattern", ['^a"b$', "^a\\tb$", "^a\\\\b$", "^[\\s]+$"])
def test_a_pattern_that_needs_escapes_is_refused(pattern):
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
    with pytest.raises(ValueError, match="cannot escape"):
        grammar.schema_to_gbnf(json.dumps(schema))


def test_the_grammar_keeps_control_characters_out_of_strings():
    stock, ours = stock_grammar(json.dumps(SERIAL)), grammar.schema_to_gbnf(json.dumps(SERIAL))
    assert 'char ::= [^"\\\\] |' in stock            # the converter's rule admits \x00-\x1F
    assert grammar.STRICT_CHAR in ours.splitlines() and 'char ::= [^"\\\\] |' not in ours
    with pytest.raises(ValueError, match="cannot be used as a grammar"):
        grammar.schema_to_gbnf(json.dumps({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}))


def test_utf8_table_agrees_with_python_decoder():
    """utf8_step's lead-byte table against CPython's strict decoder: every 1- and 2-byte
    sequence, and 3- and 4-byte ones around every boundary the table draws."""
    rng = np.random.default_rng(0)
    edges = sorted({0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
                    0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF})
    cases = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(256) for b in range(256)]
    cases += [bytes([a, b, c]) for a in edges for b in edges for c in edges]
    cases += [bytes(rng.choice(edges, 4)) for _ in range(20000)]
    for data in cases:
        end = grammar.utf8_step(grammar.START, data)
        try:
            whole = b"\x00" not in data and bool(data.decode("utf-8")) or data == b""
        except UnicodeDecodeError:
            whole = False
        assert (end == grammar.START) == whole, data
        if end is not None and end != grammar.START:
            # the table calls it a valid prefix: the completion it allows must decode
            need, lo, _ = end
            assert (data + bytes([lo]) + b"\x80" * (need - 1)).decode("utf-8"), data
        elif end is None and b"\x00" not in data:
            # the table refuses it: no completion may decode (CPython refuses most at once)
            try:
                codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
            except UnicodeDecodeError:
                continue
            for k in (1, 2, 3):
                for x in range(0x80, 0xC0):
                    with pytest.raises(UnicodeDecodeError):
                        (data + bytes([x]) + b"\x80" * (k - 1)).decode("utf-8")


# --- the box markers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box_models(converted, tmp_path_factory):
    """The tiny model as converted (box markers CONTROL) and a copy whose markers are
    USER_DEFINED, as a file converted from the release (which does not flag them) may type them."""
    import gguf
    conv = converted("F32", "F32")
    d = tmp_path_factory.mktemp("box-user-defined")
    text, mmproj = d / conv.text_path.name, d / conv.mmproj_path.name
    shutil.copy(conv.text_path, text)
    shutil.copy(conv.mmproj_path, mmproj)
    r = gguf.GGUFReader(text, "r+")
    types, toks = r.fields["tokenizer.ggml.token_type"], r.fields["tokenizer.ggml.tokens"]
    names = [bytes(toks.parts[i]).decode() for i in toks.data]
    for m in BOX:
        types.parts[types.data[names.index(m)]][0] = int(gguf.TokenType.USER_DEFINED)
    del r
    engines = {"control": _engine(conv.text_path, conv.mmproj_path), "user_defined": _engine(text, mmproj)}
    yield engines
    for e in engines.values():
        e.close()


class BiasedSampler:
    """temperature 1.0 with a logit bias that makes the model write the box markers, optionally
    under a JSON constraint (``constraint`` is grammar.add_json_constraint or a negative control)."""

    def __init__(self, pair, bias: dict[int, float], seed: int, schema: dict | None = None, constraint=None):
        ll = self.ll = pair.ll
        params = ll.llama_sampler_chain_default_params()
        self.chain = ll.llama_sampler_chain_init(params)
        arr = (ll.llama_logit_bias * len(bias))(*[ll.llama_logit_bias(t, b) for t, b in bias.items()])
        ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_logit_bias(pair.n_vocab, len(bias), arr))
        if schema is not None:
            (constraint or grammar.add_json_constraint)(ll, pair.vocab, self.chain, json.dumps(schema))
        ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_temp(1.0))
        ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_dist(seed))

    def sample(self, ctx) -> int:
        return int(self.ll.llama_sampler_sample(self.chain, ctx, -1))

    def accept(self, token: int) -> None:
        self.ll.llama_sampler_accept(self.chain, token)

    def close(self):
        self.ll.llama_sampler_free(self.chain)


def _biased_answer(eng, seed, bias, schema=None, constraint=None, max_tokens=40):
    """(answer, sampled token ids, last step) of one answer under the biased sampler."""
    session = eng.session(None)
    n_past, pt, _ = session._prefill("Serial number?", Timings())
    sampler = BiasedSampler(eng.pair, bias, seed, schema, constraint)
    tokens: list[int] = []
    try:
        answer, _, last = collect(decode_stream(eng.pair, sampler, n_past, max_tokens=max_tokens, prompt_tokens=pt,
                                                timings=Timings(), on_token=tokens.append))
    finally:
        sampler.close()
    return answer, tokens, last


@pytest.mark.parametrize("kind", ["control", "user_defined"])
def test_box_markers_never_show_in_an_answer(box_models, kind):
    eng = box_models[kind]
    ids = [eng.pair.token_id(m) for m in BOX]
    bias = {ids[0]: 6.0, ids[1]: 6.0}         # the model writes them often, between other text
    written = 0
    for seed in range(10):
        answer, tokens, _ = _biased_answer(eng, seed, bias)
        written += sum(t in ids for t in tokens)
        assert not any(m in answer for m in BOX), (kind, answer)
        # negative control: the same tokens decoded piece by piece show the USER_DEFINED markers
        naive = b"".join(eng.pair.token_piece(t) for t in tokens).decode(errors="replace")
        if kind == "user_defined" and any(t in ids for t in tokens):
            assert any(m in naive for m in BOX), naive
    assert written >= 20, written              # the markers really were written


@pytest.mark.parametrize("kind", ["control", "user_defined"])
def test_box_markers_never_land_inside_json(box_models, kind):
    eng = box_models[kind]
    ids = [eng.pair.token_id(m) for m in BOX]
    bias = {ids[0]: 30.0, ids[1]: 30.0}       # whenever the constraint lets one through, it is drawn
    inside_before = 0
    for seed in range(10):
        answer, tokens, last = _biased_answer(eng, seed, bias, schema=SERIAL)
        assert not any(t in ids for t in tokens), answer
        assert verdict(answer, last.finish_reason, SERIAL) in ("ok", "length"), answer
        # negative control: the converter's grammar alone lets the markers into the string
        answer0, tokens0, _ = _biased_answer(eng, seed, bias, schema=SERIAL, constraint=before_the_fix)
        inside_before += sum(t in ids for t in tokens0)
        if kind == "user_defined" and any(t in ids for t in tokens0):
            # printed inside the JSON string by any decoder that does not drop them by id
            naive = b"".join(eng.pair.token_piece(t) for t in tokens0).decode(errors="replace")
            value = naive[naive.index("serial") + len("serial"):]   # after the key: the string value
            assert any(m in value for m in BOX), naive
    # the string's maxLength leaves room for about one marker, after the text the model starts with
    assert inside_before >= 5, inside_before


# --- the API, as a client would call it ----------------------------------------------------------
@pytest.fixture(scope="module")
def api(converted, tmp_path_factory):
    from runtime.app.server import app as server
    conv = converted("F32", "F32")
    h = server.run("127.0.0.1", 0, model_dir=conv.text_path.parent, data_dir=tmp_path_factory.mktemp("data"))
    for _ in range(600):
        if requests.get(h.url + "api/status", timeout=10).json()["state"] != "loading":
            break
    yield h.url + "v1/chat/completions"
    h.stop()


@pytest.mark.parametrize("mode", ["json_schema", "json_object"])
def test_api_response_format_always_parses(api, mode):
    schema, question, max_tokens = MODES[mode]
    rf = ({"type": "json_object"} if mode == "json_object" else
          {"type": "json_schema", "json_schema": {"name": "serial", "schema": schema}})
    tally: Counter = Counter()
    for seed in range(12):
        r = requests.post(api, json={"model": "glmv", "messages": [{"role": "user", "content": question}],
                                     "temperature": 1.0, "seed": seed, "max_tokens": max_tokens,
                                     "response_format": rf}, timeout=120)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        tally[verdict(choice["message"]["content"], choice["finish_reason"], schema)] += 1
    print(f"\nAPI {mode}: {dict(tally)}")
    assert not _bad(tally) and tally["ok"] >= 3, (tally, _bad(tally))
    # cut by max_tokens: the client is told
    r = requests.post(api, json={"model": "glmv", "messages": [{"role": "user", "content": question}],
                                 "temperature": 1.0, "seed": 0, "max_tokens": 2, "response_format": rf}, timeout=120)
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_api_refuses_a_pattern_it_cannot_keep_json_safe(api):
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a\\tb$"}}}
    r = requests.post(api, json={"model": "glmv", "messages": [{"role": "user", "content": "hi"}],
                                 "response_format": {"type": "json_schema",
                                                     "json_schema": {"name": "s", "schema": schema}}}, timeout=60)
    assert r.status_code == 400 and "cannot escape" in r.json()["error"]["message"], r.text
