"""llama.cpp's quantizer, called through the binding: the converter's K-quants and the CPU
4-bit types come from llama.cpp's own code (its type mixes and fallbacks), never ours."""
from __future__ import annotations

import os
from pathlib import Path

from runtime.llama.backends import import_llama_cpp


class QuantizeError(RuntimeError):
    """llama.cpp's quantizer returned ``code`` (it says no more than that)."""

    def __init__(self, code: int):
        super().__init__(f"llama_model_quantize returned {code}")
        self.code = code


def quantize(src: Path, dst: Path, ftype: int, *, threads: int, max_buf_size: int) -> None:
    """``src`` (a GGUF) into ``dst`` as llama.cpp file type ``ftype``, fsynced. ``max_buf_size``
    bounds the rows held at once (memory); a failure leaves whatever llama.cpp wrote at ``dst``."""
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.max_buf_size = max_buf_size
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise QuantizeError(rc)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())
