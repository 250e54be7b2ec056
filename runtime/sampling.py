"""Sampling settings and the llama.cpp sampler chain built from them.

Greedy by default: field records need reproducible answers (and greedy answers can be cached).
A JSON schema becomes a llama.cpp grammar, so constrained output always parses.
"""
from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    json_schema: str | None = None    # JSON text of a schema; output is constrained to it

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def key(self) -> str:
        return json.dumps([self.temperature, self.top_p, self.seed, self.json_schema])


ANSWER_RULE = "glmv-answer"


class Sampler:
    """Owns a llama_sampler chain; ``sample()`` reads the context's last logits."""

    def __init__(self, ll, vocab, opts: SamplingOptions):
        self.ll = ll
        params = ll.llama_sampler_chain_default_params()
        params.no_perf = True
        self.chain = ll.llama_sampler_chain_init(params)
        if opts.json_schema:
            from llama_cpp.llama_grammar import json_schema_to_gbnf
            # GLM's template puts a newline between </think> and the answer, and the model writes
            # it first; a grammar that starts at "{" would force it off its own path at token one
            gbnf = json_schema_to_gbnf(opts.json_schema) + f"\n{ANSWER_RULE} ::= \"\\n\"? root\n"
            g = ll.llama_sampler_init_grammar(vocab, gbnf.encode(), ANSWER_RULE.encode())
            if not g:
                raise ValueError("the JSON schema could not be turned into a llama.cpp grammar")
            ll.llama_sampler_chain_add(self.chain, g)
        if opts.greedy:
            ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_greedy())
        else:
            if opts.top_p < 1.0:
                ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_top_p(opts.top_p, 1))
            ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_temp(opts.temperature))
            ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_dist(opts.seed))

    def sample(self, ctx) -> int:
        return int(self.ll.llama_sampler_sample(self.chain, ctx, -1))

    def close(self) -> None:
        if self.chain:
            self.ll.llama_sampler_free(self.chain)
            self.chain = None

    def __del__(self):
        self.close()
