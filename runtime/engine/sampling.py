"""Sampling settings, the model's own defaults, and the llama.cpp sampler chain built from them.

The defaults are the model authors' (``general.sampling.*`` in the text GGUF, written by the
converter from ``generation_config.json``); a file without them is decoded greedily. Every
setting has a seed, so the same photo, question, model and settings give the same answer —
field records stay reproducible and any answer can be cached.

The chain follows transformers' order: repetition penalty, temperature, top-k, top-p, then the
draw. A JSON schema becomes a grammar applied *before* all of them (a mask, not a choice), so
top-k can never be left with only tokens the grammar forbids.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Mapping

DEFAULT_SEED = 0
# GLM-4.6V's reasoning on a photo routinely runs to thousands of tokens: a smaller budget cuts
# it before the answer starts (the answer keeps its own budget, see generate.decode_stream)
DEFAULT_REASONING_BUDGET = 4096


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0                # 1 = off
    top_k: int = 0                    # 0 = off
    repeat_penalty: float = 1.0       # transformers' repetition_penalty; 1 = off
    frequency_penalty: float = 0.0    # OpenAI's; 0 = off
    presence_penalty: float = 0.0     # OpenAI's; 0 = off
    seed: int = DEFAULT_SEED
    json_schema: str | None = None    # JSON text of a schema; output is constrained to it
    # JSON written as json.dumps writes it: ", " and ": " between items, no other whitespace
    # (read-plate: the model's own layout, and fixed text that jump-forward need not sample)
    fixed_separators: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def key(self) -> str:
        """Everything that can change an answer (the answer cache's part of the key)."""
        return json.dumps([getattr(self, f.name) for f in fields(self)])

    def with_(self, names: Mapping[str, str] | None = None, **overrides) -> "SamplingOptions":
        """A copy with the given (non-None) settings replaced; ``greedy=True`` sets temperature 0.
        ``names``: what the caller's face calls each setting (``--top-k``, ``repetition_penalty``),
        for the error message."""
        if overrides.pop("greedy", False):
            overrides["temperature"] = 0.0
        return check(replace(self, **{k: v for k, v in overrides.items() if v is not None}), names)

    def describe(self) -> str:
        pen = [f"repeat penalty {self.repeat_penalty:g}"] if self.repeat_penalty != 1 else []
        if self.greedy:
            return ", ".join(["greedy"] + pen)
        parts = [f"temperature {self.temperature:g}"]
        parts += [f"top-k {self.top_k}"] if self.top_k else []
        parts += [f"top-p {self.top_p:g}"] if self.top_p < 1 else []
        return ", ".join(parts + pen + [f"seed {self.seed}"])


# GGUF key (gguf-py's Keys.General.SAMPLING_*) -> our field, and how the stored value is read.
GGUF_DEFAULTS: tuple[tuple[str, str, type], ...] = (
    ("general.sampling.temp", "temperature", float),
    ("general.sampling.top_p", "top_p", float),
    ("general.sampling.top_k", "top_k", int),
    ("general.sampling.penalty_repeat", "repeat_penalty", float),
)

# (field, lowest, highest, what it means): one table checks the CLI, the API and the UI alike.
LIMITS: tuple[tuple[str, float, float, str], ...] = (
    ("temperature", 0.0, 5.0, "0 is greedy"),
    ("top_p", 0.0, 1.0, "1 is off"),
    ("top_k", 0, 1_000_000, "0 is off"),
    ("repeat_penalty", 0.5, 5.0, "1 is off"),
    ("frequency_penalty", -2.0, 2.0, "0 is off"),
    ("presence_penalty", -2.0, 2.0, "0 is off"),
    ("seed", 0, 2**32 - 1, "any 32-bit number"),
)


class SettingError(ValueError):
    """A sampling setting out of range; ``name`` is what the caller's face calls it."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def check(opts: SamplingOptions, names: Mapping[str, str] | None = None) -> SamplingOptions:
    """``opts`` if every setting is in range, else a ValueError naming the first one that is not
    (as ``names`` calls it, else by its field name)."""
    for name, lo, hi, meaning in LIMITS:
        v, shown = getattr(opts, name), (names or {}).get(name, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not lo <= v <= hi:
            raise SettingError(f"{shown} must be a number from {lo:g} to {hi:g} ({meaning}), not {v!r}", shown)
        if name in ("top_k", "seed") and int(v) != v:
            raise SettingError(f"{shown} must be a whole number, not {v!r}", shown)
    return opts


def model_defaults(metadata: Mapping[str, object]) -> SamplingOptions:
    """The model authors' settings from the text GGUF's metadata; greedy where it has none.

    A file that names only some of them (e.g. a temperature but no top-k) gets the others off,
    as transformers would for a generation_config.json that leaves them out.
    """
    found = {}
    for key, name, kind in GGUF_DEFAULTS:
        v = metadata.get(key)
        if v is not None:
            try:
                # GGUF keeps float32: 0.8 comes back as 0.800000011920929; the authors wrote 0.8
                found[name] = round(float(v), 6) if kind is float else kind(v)
            except (TypeError, ValueError):
                continue   # a damaged value is ignored, not fatal: the rest still apply
    try:
        return check(SamplingOptions(**found))
    except ValueError:
        return SamplingOptions()   # out-of-range authors' values: greedy is the safe reading


class Sampler:
    """Owns a llama_sampler chain; ``sample()`` reads the context's last logits.

    ``history`` are the token ids already in the context (the prompt, earlier turns): the
    repetition penalty counts them, as transformers counts the whole ``input_ids``.
    """

    def __init__(self, ll, vocab, opts: SamplingOptions, *, history: list[int] = (), n_ctx: int = 8192):
        self.ll = ll
        params = ll.llama_sampler_chain_default_params()
        params.no_perf = True
        self.chain = ll.llama_sampler_chain_init(params)
        self.grammar = self.vocab_table = None   # the chain's grammar sampler (jump-forward probes a copy)
        if opts.json_schema:
            from runtime.engine.grammar import add_json_constraint
            added = add_json_constraint(ll, vocab, self.chain, opts.json_schema,
                                        fixed_separators=opts.fixed_separators)
            if added:   # (a test's stand-in constraint may add no grammar to probe)
                self.vocab_table, self.grammar = added[0].table, added[1]
        self.add_filters(ll, self.chain, opts, history=history, n_ctx=n_ctx, n_vocab=ll.llama_vocab_n_tokens(vocab))
        draw = ll.llama_sampler_init_greedy() if opts.greedy else ll.llama_sampler_init_dist(opts.seed)
        ll.llama_sampler_chain_add(self.chain, draw)

    @staticmethod
    def add_filters(ll, chain, opts: SamplingOptions, *, history=(), n_ctx: int = 8192, n_vocab: int) -> None:
        """Penalties, temperature, top-k, top-p in transformers' order (no draw): the tests apply
        this part alone to compare it with transformers' logits processors. Greedy keeps the
        penalty (transformers applies repetition_penalty with do_sample=False too)."""
        if opts.repeat_penalty != 1.0 or opts.frequency_penalty or opts.presence_penalty:
            # the window is the whole context: transformers penalizes every token of input_ids
            pen = ll.llama_sampler_init_penalties(n_vocab, n_ctx, opts.repeat_penalty, opts.frequency_penalty,
                                                  opts.presence_penalty)
            for tok in history:
                ll.llama_sampler_accept(pen, int(tok))
            ll.llama_sampler_chain_add(chain, pen)
        if opts.greedy:
            return
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(opts.temperature))
        if opts.top_k > 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(opts.top_k))
        if opts.top_p < 1.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(opts.top_p, 1))

    def sample(self, ctx, row: int = -1) -> int:
        """Sample from the logits of output ``row`` of the last batch (-1: its last) and accept it."""
        return int(self.ll.llama_sampler_sample(self.chain, ctx, row))

    def accept(self, token: int) -> None:
        """A token the runtime put into the context itself (e.g. ``</think>`` at the budget)."""
        self.ll.llama_sampler_accept(self.chain, int(token))

    def close(self) -> None:
        if self.chain:
            self.ll.llama_sampler_free(self.chain)
            self.chain = None

    def __del__(self):
        self.close()
