"""The read-plate answer parsed as it is written: each top-level field of the JSON object is
handed out the moment its value is complete, so the table fills in while the model reads.

The answer is held to the plate schema's grammar (one flat object of strings / nulls and one
list of small objects), so a small scanner over that shape is enough: it follows strings,
escapes and nesting, notes where each top-level value starts, and parses that slice with
``json.loads`` once the value has closed. Nothing is guessed: a field is reported only when its
text is final. A literal (``null``) is final as soon as it is spelled out, so it does not wait
for the comma after it.
"""
from __future__ import annotations

import json

_LITERALS = ("null", "true", "false")


class FieldParser:
    """Feed it the answer's text piece by piece; ``feed`` returns the (key, value) pairs that
    became complete with that piece, in the order they were written."""

    def __init__(self) -> None:
        self.text = ""
        self.fields: dict[str, object] = {}   # every complete field so far
        self._i = 0                # next character to scan
        self._depth = 0            # nesting: 1 = inside the top-level object
        self._in_string = False
        self._escape = False
        self._expect = "key"       # at depth 1: "key" | "colon" | "value" (after the colon)
        self._key_start = -1       # where the current key's string starts (its quote)
        self._key: str | None = None
        self._value_start = -1     # where the current top-level value starts
        self._value_kind = ""      # "string" | "nested" | "literal"
        self.closed = False        # the top-level object has ended

    def feed(self, piece: str) -> list[tuple[str, object]]:
        self.text += piece
        out: list[tuple[str, object]] = []
        text = self.text
        while self._i < len(text):
            i, c = self._i, text[self._i]
            self._i += 1
            if self.closed:
                continue
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_string = False
                    if self._depth == 1:
                        self._string_closed(i, out)
                continue
            if c == '"':
                self._in_string = True
                if self._depth == 1:
                    if self._expect == "key":
                        self._key_start = i
                    elif self._expect == "value":
                        self._start_value(i, "string")
                continue
            if c in "{[":
                self._depth += 1
                if self._depth == 2 and self._expect == "value":
                    self._start_value(i, "nested")
                continue
            if c in "}]":
                self._depth -= 1
                if self._depth == 1 and self._value_kind == "nested":
                    self._finish(i + 1, out)
                elif self._depth == 0:
                    if self._value_kind == "literal":
                        self._finish(i, out)
                    self.closed = True
                continue
            if self._depth != 1:
                continue
            if c == ":" and self._expect == "colon":
                self._expect = "value"
            elif c == "," and self._value_kind == "literal":
                self._finish(i, out)   # a number: final at the comma after it
                self._expect = "key"
            elif c == ",":
                self._expect = "key"
            elif not c.isspace() and self._expect == "value" and not self._value_kind:
                self._start_value(i, "literal")
            if self._value_kind == "literal" and text[self._value_start:i + 1] in _LITERALS:
                self._finish(i + 1, out)
        return out

    # --- the current top-level value ---------------------------------------------------------
    def _string_closed(self, i: int, out: list) -> None:
        if self._expect == "key":
            try:
                self._key = json.loads(self.text[self._key_start:i + 1])
            except ValueError:
                self._key = None
            self._expect = "colon"
        elif self._value_kind == "string":
            self._finish(i + 1, out)

    def _start_value(self, i: int, kind: str) -> None:
        self._value_start, self._value_kind = i, kind

    def _finish(self, end: int, out: list) -> None:
        raw = self.text[self._value_start:end].strip()
        key, self._value_kind, self._expect = self._key, "", "after"
        self._key = None
        try:
            value = json.loads(raw)
        except ValueError:
            return   # not JSON after all (a grammar would not allow it): the field is not reported
        if isinstance(key, str) and key not in self.fields:
            self.fields[key] = value
            out.append((key, value))
