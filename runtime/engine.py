"""The one Python API the CLI, the HTTP API and the UI use: load a pair, ask about a photo."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import chat_template
from .generate import Step, Timings, decode_stream
from .images import PreparedImage
from .llama_model import LlamaPair
from .model_files import check_pair, verify_checksums


@dataclass
class EngineOptions:
    n_ctx: int = 4096
    n_threads: int | None = None
    n_gpu_layers: int = 0
    verify: bool = False


class Engine:
    def __init__(self, text_path: str | Path, mmproj_path: str | Path, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.text_info, self.mmproj_info = check_pair(text_path, mmproj_path)
        if self.options.verify:
            verify_checksums(Path(text_path), Path(mmproj_path))
        self.text_path, self.mmproj_path = Path(text_path), Path(mmproj_path)
        t0 = time.perf_counter()
        self.pair = LlamaPair(text_path, mmproj_path, n_ctx=self.options.n_ctx,
                              n_threads=self.options.n_threads or _physical_cores(),
                              n_gpu_layers=self.options.n_gpu_layers)
        self.load_ms = 1000 * (time.perf_counter() - t0)
        self.template = self.text_info.get("tokenizer.chat_template") or ""

    def ask(self, image: PreparedImage | None, question: str, *, max_tokens: int = 256,
            enable_thinking: bool = False) -> Iterator[Step]:
        """One question about one photo from an empty context (sessions build on this)."""
        pair = self.pair
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
        prompt = chat_template.render(self.template, [{"role": "user", "content": content}],
                                      enable_thinking=enable_thinking, marker=pair.marker)
        timings = Timings()
        t0 = time.perf_counter()
        pair.clear()
        n_past = 0
        logits = None
        with pair.tokenize(prompt, [image.as_tuple()] if image else []) as chunks:
            if chunks.n_pos + 1 > pair.n_ctx:
                raise ValueError(f"the prompt needs {chunks.n_pos} positions but the context holds {pair.n_ctx}: "
                                 "use a smaller image budget or a larger --ctx")
            for i, c in enumerate(chunks.items):
                if c.kind == "image":
                    te = time.perf_counter()
                    embd = pair.encode_image(c)
                    timings.image_encode_ms += 1000 * (time.perf_counter() - te)
                    n_past = pair.decode_image(c, embd, n_past)
                    logits = None
                else:
                    n_past, logits = pair.decode_tokens(c.tokens, n_past, logits="last")
            prompt_tokens = chunks.n_tokens
        if logits is None:  # prompt ended on an image: nothing to sample from yet
            raise ValueError("the prompt must end with text after the image")
        timings.prefill_ms = 1000 * (time.perf_counter() - t0)
        max_tokens = min(max_tokens, pair.n_ctx - n_past)
        yield from decode_stream(pair, logits, n_past, max_tokens=max_tokens, prompt_tokens=prompt_tokens,
                                 timings=timings, t_start=t0)

    def close(self) -> None:
        self.pair.close()


def _physical_cores() -> int:
    """Physical cores (hyper-threads slow llama.cpp down); falls back to logical count."""
    try:
        ids = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                ids.add((phys, core))
        if ids:
            return len(ids)
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)
