"""Output held to a JSON schema, so that every answer that ends on its own parses and validates.

Two parts go into the sampler chain, and both are needed:

1. **The grammar** (llama.cpp's GBNF, from llama-cpp-python's schema converter) with one rule
   replaced: the converter's Python port writes a JSON string character as ``[^"\\]``, which
   admits raw control characters (U+0000-U+001F) that JSON forbids inside strings — answers such
   as ``{"serial": "ab\x16\x16"}`` that ``json.loads`` refuses. llama.cpp's own C++ converter
   excludes them; :data:`STRICT_CHAR` does the same.

2. **The token guard**, a sampler placed before the grammar that bans every token whose text
   the grammar would see differently from the answer the user gets:

   - llama.cpp's grammar reads each token as ``token_to_piece(special=true)``: a control token
     (``<|observation|>``, ``<|begin_of_box|>``, …) is *literal text* to it, so it may sit
     inside a JSON string, while the answer prints it as nothing — or, for a stop token that is
     not end-of-generation (``<|observation|>``), ends the answer before the JSON is closed.
     Only text tokens (llama.cpp types NORMAL and BYTE) may appear in the output; the
     end-of-generation tokens are left to the grammar, which allows them only where the JSON is
     complete.
   - the grammar's UTF-8 decoder checks neither the continuation bytes inside one token nor
     overlong forms, surrogates or code points past U+10FFFF, so a byte-level BPE token such as
     ``b"\\xc2\\x16"`` passes as one harmless character while Python decodes it to U+FFFD and a
     raw U+0016. The guard follows the bytes already written and allows a token only if they
     and its bytes stay a valid UTF-8 prefix (and hold no NUL, which ends llama.cpp's C string).

A string ``pattern`` is narrowed first (:func:`json_safe_pattern`): the converter copies it into
the grammar unescaped, so "." or ``[^a]`` would let a raw quote close the string early.

With all of it, the grammar's view of the text and the decoded answer are the same characters,
so "the grammar accepted it" means "it parses and validates".
"""
from __future__ import annotations

import ctypes
import json
import re

import numpy as np

ANSWER_RULE = "glmv-answer"

# The JSON string character of llama.cpp's json-schema-to-grammar.cpp: any code point but the
# quote, the backslash, DEL and the C0 controls, or an escape.
STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_CHAR_RULE = re.compile(r"^char ::= .*$", re.M)

# llama_token_attr bits (llama.h)
ATTR_UNKNOWN, ATTR_UNUSED, ATTR_NORMAL, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_BYTE = 1, 2, 4, 8, 16, 32
TEXT_ATTRS = ATTR_NORMAL | ATTR_BYTE
NON_TEXT_ATTRS = ATTR_UNKNOWN | ATTR_UNUSED | ATTR_CONTROL | ATTR_USER_DEFINED

# UTF-8 lead bytes (RFC 3629, table 3-7 of the Unicode standard): first byte range ->
# (continuation bytes that follow, allowed range of the *first* continuation byte). The narrow
# ranges exclude overlong forms (E0, F0), surrogates (ED) and code points past U+10FFFF (F4).
UTF8_LEADS: tuple[tuple[int, int, int, int, int], ...] = (
    (0x01, 0x7F, 0, 0, 0),          # ASCII (NUL excluded: it ends llama.cpp's C string)
    (0xC2, 0xDF, 1, 0x80, 0xBF),
    (0xE0, 0xE0, 2, 0xA0, 0xBF),
    (0xE1, 0xEC, 2, 0x80, 0xBF),
    (0xED, 0xED, 2, 0x80, 0x9F),
    (0xEE, 0xEF, 2, 0x80, 0xBF),
    (0xF0, 0xF0, 3, 0x90, 0xBF),
    (0xF1, 0xF3, 3, 0x80, 0xBF),
    (0xF4, 0xF4, 3, 0x80, 0x8F),
)
_LEAD = {b: (n, lo, hi) for first, last, n, lo, hi in UTF8_LEADS for b in range(first, last + 1)}

Utf8State = tuple[int, int, int]   # (continuation bytes still due, range of the next one)
START: Utf8State = (0, 0, 0)


def utf8_step(state: Utf8State, data: bytes) -> Utf8State | None:
    """The state after ``data`` written in ``state``, or None if the bytes are not valid UTF-8."""
    need, lo, hi = state
    for b in data:
        if need:
            if not lo <= b <= hi:
                return None
            need, lo, hi = need - 1, 0x80, 0xBF
        else:
            lead = _LEAD.get(b)
            if lead is None:
                return None
            need, lo, hi = lead
    return (need, lo, hi) if need else START


# A string "pattern" is copied by the converter into the grammar as the raw characters between
# the quotes, with no JSON escaping: "." and negated classes would admit a quote, a backslash or a
# control character there. They are narrowed to the characters a JSON string holds unescaped
# (the output then still matches the client's pattern); what cannot be narrowed is refused.
_UNSAFE_IN_STRING = '"\\' + "".join(map(chr, range(0x20))) + "\x7f"
_SAFE_DOT = '[^"\\\\\\x00-\\x1F\\x7F]'
_SAFE_NEGATION = '"\\\\\\x00-\\x1F\\x7F'


def json_safe_pattern(pattern: str) -> str:
    """``pattern`` narrowed so that nothing it matches needs escaping in a JSON string."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":                          # a class, up to its closing bracket
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"      # a "]" first is a literal
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            part = pattern[i:j + 1]
            if part.startswith("[^"):
                part = "[^" + part[2:-1] + _SAFE_NEGATION + "]"
            elif _matches_unsafe(part):
                part = _without_unsafe(part) or part   # e.g. [ -~] -> [ !#-\[\]-~]
            i = j + 1
        elif c == "\\":
            part, i = pattern[i:i + 2], i + 2
        elif c == ".":
            part, i = _SAFE_DOT, i + 1
        else:
            part, i = c, i + 1
        if _matches_unsafe(part):
            raise ValueError(f"the pattern {pattern!r} can put a quote, a backslash or a control character "
                             f"({part!r}) inside a JSON string, which the grammar cannot escape: leave them out")
        out.append(part)
    return "".join(out)


_CLASS_ESCAPES = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11}


def _class_ranges(body: str) -> list[tuple[int, int]] | None:
    """The code point ranges of a positive class body (``a-z0-9_``), or None for what this
    small reader does not know (``\\d``, ``\\w``, …)."""
    items, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            e = body[i + 1:i + 2]
            if e in ("x", "u"):
                width = 2 if e == "x" else 4
                try:
                    items.append(int(body[i + 2:i + 2 + width], 16))
                except ValueError:
                    return None
                i += 2 + width
                continue
            if e in _CLASS_ESCAPES:
                items.append(_CLASS_ESCAPES[e])
            elif e and not e.isalnum():
                items.append(ord(e))
            else:
                return None
            i += 2
        else:
            items.append(ord(body[i]) if body[i] != "-" or not items or i + 1 == len(body) else -1)
            i += 1
    ranges, k = [], 0
    while k < len(items):
        if k + 2 < len(items) and items[k + 1] == -1:
            ranges.append((items[k], items[k + 2]))
            k += 3
        elif items[k] == -1:
            return None
        else:
            ranges.append((items[k], items[k]))
            k += 1
    return ranges


def _without_unsafe(cls: str) -> str | None:
    """The positive class ``cls`` less the characters a JSON string cannot hold raw."""
    ranges = _class_ranges(cls[1:-1])
    if ranges is None:
        return None
    keep = []
    for lo, hi in ranges:
        cut = sorted({c for c in map(ord, _UNSAFE_IN_STRING) if lo <= c <= hi})
        start = lo
        for c in cut + [hi + 1]:
            if start <= c - 1:
                keep.append((start, c - 1))
            start = c + 1
    return "[" + "".join(f"\\u{a:04X}" if a == b else f"\\u{a:04X}-\\u{b:04X}" for a, b in keep) + "]" if keep else None


def _matches_unsafe(regex_part: str) -> bool:
    try:
        rx = re.compile(regex_part)
    except re.error:
        return False          # not Python's syntax: the converter or llama.cpp's parser decides
    return any(rx.fullmatch(ch) for ch in _UNSAFE_IN_STRING)


def _narrow_patterns(node):
    if isinstance(node, dict):
        return {k: json_safe_pattern(v) if k == "pattern" and isinstance(v, str) else _narrow_patterns(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_narrow_patterns(v) for v in node]
    return node


# The converter's optional space (``space ::= " "?``) sits after every bracket, key, colon, comma
# and value. Fixed separators write JSON as json.dumps does: one space after "," and ":", none
# elsewhere — so the text between two values is forced (runtime/engine/jump_forward.py).
_SPACE_RULE = re.compile(r'^space ::= .*$', re.M)
FIXED_SEPARATORS = ((re.compile(r'"," space'), '", "'), (re.compile(r'":" space'), '": "'))


def fix_separators(gbnf: str) -> str:
    """``gbnf`` (from llama-cpp-python's converter) with json.dumps' separators."""
    if len(_SPACE_RULE.findall(gbnf)) != 1:
        raise ValueError("llama-cpp-python's schema converter writes its space rule differently now: "
                         "runtime/engine/grammar.py must be updated for it")
    for rx, fixed in FIXED_SEPARATORS:
        gbnf = rx.sub(lambda _: fixed, gbnf)
    return _SPACE_RULE.sub('space ::= ""', gbnf)


def schema_to_gbnf(schema: str, fixed_separators: bool = False) -> str:
    """The grammar for ``schema`` (JSON text), rooted at :data:`ANSWER_RULE`; ValueError when the
    schema cannot be turned into one (the API answers that with a 400)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    try:
        narrowed = json.dumps(_narrow_patterns(json.loads(schema)))
        gbnf = json_schema_to_gbnf(narrowed)
    except Exception as e:  # noqa: BLE001 - the converter raises assorted errors on odd schemas
        raise ValueError(f"the JSON schema cannot be used as a grammar: {e}") from None
    gbnf = _CHAR_RULE.sub(lambda _: STRICT_CHAR, gbnf)
    if fixed_separators:
        gbnf = fix_separators(gbnf)
    # the converter's permissive string character must be gone (a renamed rule would keep it)
    if '[^"\\\\]' in gbnf.replace(STRICT_CHAR, ""):
        raise ValueError("llama-cpp-python's schema converter writes its string rule differently now: "
                         "runtime/engine/grammar.py must be updated for it")
    # GLM's template puts a newline between </think> and the answer, and the model writes
    # it first; a grammar that starts at "{" would force it off its own path at token one
    return gbnf + f"\n{ANSWER_RULE} ::= \"\\n\"? root\n"


class VocabTable:
    """What the guard needs to know of each token, computed once per loaded vocabulary."""

    def __init__(self, ll, vocab):
        n = ll.llama_vocab_n_tokens(vocab)
        self.n_vocab = n
        self.pieces: list[bytes] = []
        self.eog = np.zeros(n, dtype=bool)
        text = np.zeros(n, dtype=bool)
        buf = ctypes.create_string_buffer(256)
        for t in range(n):
            attr = int(ll.llama_vocab_get_attr(vocab, t))
            # special=True: the piece exactly as llama.cpp's grammar reads it
            k = ll.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
            if k < 0:
                big = ctypes.create_string_buffer(-k)
                k = ll.llama_token_to_piece(vocab, t, big, len(big), 0, True)
                piece = big.raw[:k]
            else:
                piece = buf.raw[:k]
            self.pieces.append(piece)
            self.eog[t] = bool(ll.llama_vocab_is_eog(vocab, t))
            text[t] = bool(attr & TEXT_ATTRS) and not attr & NON_TEXT_ATTRS and len(piece) > 0
        self.text = text
        self.text_ids = np.flatnonzero(text)
        self._banned: dict[Utf8State, np.ndarray] = {}

    def banned(self, state: Utf8State) -> np.ndarray:
        """Mask of the tokens that may not come next after text that ends in ``state``."""
        mask = self._banned.get(state)
        if mask is None:
            mask = np.ones(self.n_vocab, dtype=bool)
            ids = self.text_ids
            if state != START:   # only tokens that begin with an allowed continuation byte can fit
                first = np.array([self.pieces[t][0] for t in ids], dtype=np.int32)
                ids = ids[(first >= state[1]) & (first <= state[2])]
            ok = [t for t in ids if utf8_step(state, self.pieces[t]) is not None]
            mask[np.asarray(ok, dtype=np.int64)] = False
            if state == START:   # the answer may end only between whole characters
                mask[self.eog] = False
            self._banned[state] = mask
        return mask


# one table per vocabulary. Keyed on the vocab's ctypes object, which the entry keeps alive: its
# id can then never be reused, so a model loaded later (even at the same address, with another
# ctypes object) never gets a freed model's table. The last few vocabularies are kept.
_TABLES: dict[int, tuple[object, VocabTable]] = {}
_KEEP_TABLES = 2


def vocab_table(ll, vocab) -> VocabTable:
    hit = _TABLES.pop(id(vocab), None)
    table = hit[1] if hit is not None and hit[0] is vocab else VocabTable(ll, vocab)
    _TABLES[id(vocab)] = (vocab, table)          # most recent last
    while len(_TABLES) > _KEEP_TABLES:
        del _TABLES[next(iter(_TABLES))]
    return table


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

# guards whose chain is still alive (llama.cpp calls into them), and the last few whose chain
# freed them: a guard is never dropped inside llama.cpp's own call to free it (that callback is
# still running), only later, when newer guards push it out
_LIVE: dict[int, "TokenGuard"] = {}
_RETIRED: list["TokenGuard"] = []
_KEEP_RETIRED = 16


class TokenGuard:
    """A llama.cpp sampler (Python callbacks) that bans the tokens described in the module doc.

    It tracks the UTF-8 state of the text written so far through ``accept`` (llama.cpp calls
    it for every token the chain samples or is told about).
    """

    def __init__(self, ll, table: VocabTable):
        self.table, self.state = table, START
        iface = ll.llama_sampler_i()
        # the callbacks must stay referenced while llama.cpp may call them
        self._cb = (ll.llama_sampler_i_apply(self._apply), ll.llama_sampler_i_accept(self._accept),
                    ll.llama_sampler_i_reset(self._reset), ll.llama_sampler_i_free(self._free))
        iface.apply, iface.accept, iface.reset, iface.free = self._cb
        iface.name = ll.llama_sampler_i_name(0)     # NULL: optional
        iface.clone = ll.llama_sampler_i_clone(0)   # NULL: the chain is never cloned
        self._iface = iface
        self.ptr = ll.llama_sampler_init(ctypes.byref(iface), None)
        if not self.ptr:
            raise RuntimeError("llama.cpp could not create the JSON token guard")

    def _apply(self, _smpl, cur_p) -> None:
        arr = cur_p.contents
        n = int(arr.size)
        addr = ctypes.cast(arr.data, ctypes.c_void_p).value
        if not n or not addr:
            return
        data = np.frombuffer((ctypes.c_char * (n * _TOKEN_DATA.itemsize)).from_address(addr), dtype=_TOKEN_DATA)
        banned = self.table.banned(self.state)[data["id"]]
        data["logit"][banned] = -np.inf
        arr.sorted = False   # -inf may break an order an earlier sampler set

    def _accept(self, _smpl, token: int) -> None:
        t = int(token)
        if 0 <= t < self.table.n_vocab and self.table.text[t]:
            self.state = utf8_step(self.state, self.table.pieces[t]) or START
        else:   # end of generation, or a token the runtime fed itself: no character is open
            self.state = START

    def _reset(self, _smpl) -> None:
        self.state = START

    def _free(self, smpl) -> None:
        # called by llama.cpp while it frees the chain: keep this object (and the callback now
        # running) alive until the next add_json_constraint
        guard = _LIVE.pop(ctypes.cast(smpl, ctypes.c_void_p).value or 0, None)
        if guard is not None:
            _RETIRED.append(guard)


def add_guard(ll, vocab, chain) -> TokenGuard:
    """Add the token guard alone to ``chain`` (which owns it from then on)."""
    del _RETIRED[:-_KEEP_RETIRED]
    guard = TokenGuard(ll, vocab_table(ll, vocab))
    _LIVE[ctypes.cast(guard.ptr, ctypes.c_void_p).value] = guard
    ll.llama_sampler_chain_add(chain, guard.ptr)
    return guard


def add_json_constraint(ll, vocab, chain, schema: str, fixed_separators: bool = False):
    """Add to ``chain`` (first, before any filter) what holds the output to ``schema``: the token
    guard, then the grammar. The chain owns both; returns (guard, grammar sampler), which need no
    keeping. ValueError when the schema cannot be a grammar."""
    gbnf = schema_to_gbnf(schema, fixed_separators)
    guard = add_guard(ll, vocab, chain)
    g = ll.llama_sampler_init_grammar(vocab, gbnf.encode(), ANSWER_RULE.encode())
    if not g:
        raise ValueError("the JSON schema could not be turned into a llama.cpp grammar")
    ll.llama_sampler_chain_add(chain, g)
    return guard, g
