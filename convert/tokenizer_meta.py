"""The text GGUF's tokenizer and prompt metadata, read from the checkpoint the way its authors ship it.

- **Token types** equal llama.cpp's own converter for every id (``conversion/base.py``,
  ``get_vocab_base`` + ``does_token_look_special``), declared as one rule table.
- **Chat template** from ``chat_template.jinja``, else ``chat_template.json`` (older HF layout:
  ``{"chat_template": ...}``), else ``tokenizer_config.json``'s ``chat_template`` (a string, or a
  list of named templates of which "default" is taken). A checkpoint with none is refused: the
  runtime renders every prompt from the file's template and cannot work without one.
- **Model family**: GLM-4.1V-9B-Thinking has the same network but another prompt contract (its
  official template has no ``enable_thinking``: a thinking-only model with its own answer format),
  so it is refused rather than half supported.
- **Generation defaults** from ``generation_config.json`` as ``general.sampling.*`` keys, the same
  keys and value types llama.cpp's converter writes (gguf-py ``Metadata.load``), but only when
  ``do_sample`` is true: transformers decodes greedily otherwise, whatever temperature is listed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from convert.errors import ConversionError

T = gguf.TokenType

# GLM special tokens llama.cpp needs by role (llama.cpp's Glm4Model.set_vocab sets the same ones;
# pad comes from tokenizer_config's pad_token there, which is <|endoftext|> in every GLM release).
SPECIAL_TOKEN_ROLES: dict[str, str] = {
    "bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>",
    "pad": "<|endoftext|>", "eot": "<|user|>",
}

# --- token types ------------------------------------------------------------------------------
# llama.cpp's converter types an added token CONTROL when the tokenizer flags it special *or* it
# merely looks like a control token (some releases leave control tokens unflagged: GLM-4.6V's
# <|begin_of_box|>/<|end_of_box|>). CONTROL tokens never print and a grammar cannot emit them, so
# a different type here means markers in answers or inside JSON strings. These are its shapes:
LOOKS_SPECIAL_EXACT = frozenset({"<pad>", "<mask>", "<2mass>", "[@BOS@]"})
LOOKS_SPECIAL_WRAPPED: tuple[tuple[str, str], ...] = (("<|", "|>"), ("<｜", "｜>"), ("<unused", ">"))


def looks_special(text: str) -> bool:
    return text in LOOKS_SPECIAL_EXACT or any(text.startswith(a) and text.endswith(b) for a, b in LOOKS_SPECIAL_WRAPPED)


# (kind of id, is it special-or-looks-special) -> type; first match wins. "absent" ids (rows of the
# embedding beyond the tokenizer) become [PAD<id>] UNUSED; vocabulary entries NORMAL (GLM's
# byte-level BPE has no BYTE tokens: bytes are ordinary vocabulary entries).
TYPE_RULES: tuple[tuple[str, bool | None, gguf.TokenType], ...] = (
    ("absent", None, T.UNUSED),
    ("added", True, T.CONTROL),
    ("added", False, T.USER_DEFINED),
    ("vocab", None, T.NORMAL),
)


def token_type(kind: str, special: bool) -> gguf.TokenType:
    for k, flag, typ in TYPE_RULES:
        if k == kind and (flag is None or flag == special):
            return typ
    raise AssertionError(f"no type rule for {kind}")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path} is not readable JSON ({e}): the {what} is damaged") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path} is not a JSON object: the {what} is damaged")
    return data


def read_tokenizer(src: Path) -> tuple[dict, dict]:
    tj = src / "tokenizer.json"
    if not tj.is_file():
        raise ConversionError(f"tokenizer.json not found in {src}: the GGUF needs the tokenizer")
    cfg = src / "tokenizer_config.json"
    return _read_json(tj, "tokenizer"), (_read_json(cfg, "tokenizer config") if cfg.is_file() else {})


# The named special tokens of a tokenizer_config.json (transformers' SPECIAL_TOKENS_ATTRIBUTES).
NAMED_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _flagged_special(tokenizer: dict, tcfg: dict) -> dict[int, bool]:
    """Each added token's ``special`` flag as transformers 5 reports it in ``added_tokens_decoder``,
    which is what llama.cpp's converter reads (measured on transformers 5.24): tokenizer.json's own
    flag, unless tokenizer_config.json has an ``added_tokens_decoder`` entry for the id — that entry
    wins, and is forced special when its text is one of the named special tokens. Listing a token in
    ``additional_special_tokens``/``extra_special_tokens`` changes nothing."""
    flags = {int(a["id"]): bool(a.get("special")) for a in tokenizer.get("added_tokens", [])}
    decoder = tcfg.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        named = {tcfg[k] for k in NAMED_SPECIAL_KEYS if isinstance(tcfg.get(k), str)}
        for idx, entry in decoder.items():
            if isinstance(entry, dict) and str(idx).isdigit():
                flags[int(idx)] = bool(entry.get("special")) or entry.get("content") in named
    return flags


def vocab_table(src: Path, vocab_size: int) -> tuple[list[str], list[int], dict[str, int]]:
    """Tokens, token types and special ids, padded to the model's vocab_size like GLM's own."""
    tokenizer, tcfg = read_tokenizer(src)
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise ConversionError(f"tokenizer.json model type {model.get('type')!r} is not BPE (GLM uses byte-level BPE)")
    flagged = _flagged_special(tokenizer, tcfg)
    # text -> id as transformers' get_vocab() gives it (an added token wins over a vocabulary entry
    # with the same text), then inverted: llama.cpp walks ids through exactly this map.
    added = {a["content"]: int(a["id"]) for a in tokenizer.get("added_tokens", [])}
    text_to_id = {t: int(i) for t, i in model["vocab"].items()}
    text_to_id.update(added)
    by_id = {i: (t, "added" if t in added else "vocab") for t, i in text_to_id.items()}
    if max(by_id) >= vocab_size:
        raise ConversionError(f"tokenizer has id {max(by_id)} but the model's vocab_size is {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", "absent"))
        typ = token_type(kind, flagged.get(i, False) or looks_special(text))
        if typ == T.USER_DEFINED:
            text = text.replace("\u2581", " ")   # llama.cpp pre-normalizes SentencePiece spaces in these
        tokens.append(text)
        types.append(int(typ))
    missing = sorted({t for t in SPECIAL_TOKEN_ROLES.values() if t not in added})
    if missing:
        raise ConversionError(f"tokenizer lacks GLM special token(s) {missing}")
    return tokens, types, {role: added[t] for role, t in SPECIAL_TOKEN_ROLES.items()}


# --- chat template ----------------------------------------------------------------------------

def _template_from_jinja(src: Path):
    p = src / "chat_template.jinja"
    return (p.read_text(encoding="utf-8"), p.name) if p.is_file() else None


def _template_from_json(src: Path):
    p = src / "chat_template.json"
    return (_read_json(p, "chat template").get("chat_template"), p.name) if p.is_file() else None


def _template_from_tokenizer_config(src: Path):
    p = src / "tokenizer_config.json"
    return (_read_json(p, "tokenizer config").get("chat_template"), p.name) if p.is_file() else None


# The places a release keeps its template, first found wins: the processor's files (transformers'
# AutoProcessor renders a VLM's prompts from chat_template.jinja, or from the legacy
# chat_template.json of older releases), then the tokenizer's. transformers' AutoTokenizer also
# prefers chat_template.jinja over tokenizer_config.json; llama.cpp's converter prefers
# tokenizer_config.json — they differ only for a checkpoint carrying two different templates.
TEMPLATE_SOURCES = (_template_from_jinja, _template_from_json, _template_from_tokenizer_config)


def chat_template(src: Path) -> tuple[str, str]:
    """(template text, file it came from); refuses a checkpoint that has none."""
    for source in TEMPLATE_SOURCES:
        found = source(src)
        if not found or found[0] is None:
            continue
        tmpl, where = found
        if isinstance(tmpl, list):   # named templates: [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, dict)}
            tmpl = named.get("default")
            if not isinstance(tmpl, str):
                raise ConversionError(f"{src / where}: chat_template is a list with no template named 'default' "
                                      f"(names: {sorted(map(str, named))})")
        if not isinstance(tmpl, str) or not tmpl.strip():
            raise ConversionError(f"{src / where}: chat_template is not a template string")
        return tmpl, where
    raise ConversionError(f"{src} has no chat template (looked for chat_template.jinja, chat_template.json and "
                          "tokenizer_config.json's chat_template): the runtime renders every prompt from it. Copy "
                          "chat_template.jinja from the model's release into the folder and convert again")


# --- model family -----------------------------------------------------------------------------
# GLM-4.1V-9B-Thinking's official template has no enable_thinking (a public copy of it is a plain
# role loop: [gMASK]<sop>, <|user|>/<|assistant|>, image spans, nothing else) and its name says
# so; its image token id also differs (151343, GLM-4.6V's is 151363) but ids are not checked here
# because synthetic checkpoints use small vocabularies.
GLM41V_NAME = re.compile(r"glm-?4\.1v", re.IGNORECASE)


def check_family(src: Path, template: str, template_file: str) -> None:
    cfg = src / "config.json"
    config = _read_json(cfg, "model config") if cfg.is_file() else {}
    names = [src.name, str(config.get("_name_or_path") or "")]
    if any(GLM41V_NAME.search(n) for n in names):
        raise ConversionError(f"{src} looks like GLM-4.1V-9B-Thinking ({', '.join(n for n in names if n)}): it shares "
                              "GLM-4.6V-Flash's network but not its prompt format (no thinking switch), "
                              "which this runtime does not support. Convert GLM-4.6V-Flash instead")
    if "enable_thinking" not in template:
        raise ConversionError(f"{src / template_file}: the chat template has no enable_thinking switch, like "
                              "GLM-4.1V-9B-Thinking's: this runtime needs GLM-4.6V-Flash's template (thinking on and "
                              "off). Convert GLM-4.6V-Flash, or use the template that came with it")


# --- generation defaults ----------------------------------------------------------------------
# generation_config.json key(s) -> (GGUF key, value type), as llama.cpp's converter maps them.
SAMPLING_KEYS: tuple[tuple[tuple[str, ...], str, type], ...] = (
    (("temperature",), "general.sampling.temp", float),
    (("top_k",), "general.sampling.top_k", int),
    (("top_p",), "general.sampling.top_p", float),
    (("min_p",), "general.sampling.min_p", float),
    (("penalty_repeat", "repetition_penalty"), "general.sampling.penalty_repeat", float),
)


@dataclass(frozen=True)
class SamplingDefaults:
    values: dict[str, float | int]   # GGUF key -> value (empty: greedy)
    source: str

    def add_to(self, w: gguf.GGUFWriter) -> None:
        for key, value in self.values.items():
            (w.add_int32 if isinstance(value, int) else w.add_float32)(key, value)


def sampling_defaults(src: Path) -> SamplingDefaults:
    path = src / "generation_config.json"
    if not path.is_file():
        return SamplingDefaults({}, "no generation_config.json (greedy)")
    gc = _read_json(path, "generation config")
    if gc.get("do_sample") is not True:
        return SamplingDefaults({}, f"{path.name}: do_sample is not true (greedy)")
    values: dict[str, float | int] = {}
    for names, key, typ in SAMPLING_KEYS:
        raw = next((gc[n] for n in names if gc.get(n) is not None), None)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConversionError(f"{path}: {names[0]} is {raw!r}, not a number")
        values[key] = typ(raw)
    return SamplingDefaults(values, path.name)
