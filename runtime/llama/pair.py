"""A loaded (text GGUF, mmproj GGUF) pair driven through llama.cpp's C API and ``mtmd``.

This is the thin layer over ``llama_cpp`` / ``llama_cpp.mtmd_cpp`` that everything else uses:
tokenize a prompt with image markers into chunks, encode an image once, feed chunks into the
KV cache at the right (M-RoPE) positions, read logits. It deliberately does *not* use
``MTMDChatHandler``, which clears the KV cache on every call (re-encoding the image each turn)
and drops ``enable_thinking``.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.llama.backends import import_llama_cpp

GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
# context / mtmd parameters that change the numbers a cached prompt prefix or image encoding holds
# (runtime/engine/photo_memory.py keys on them; the thread count does not change them)
_STATE_FIELDS = ("type_k", "type_v", "flash_attn_type", "n_batch", "n_ubatch", "swa_full", "kv_unified")
# mtmd's own clamp on a GLM-4V image, widened past any budget the engine allows (6144 tokens,
# runtime/engine/images.py): the engine already put the photo on transformers' grid, and mtmd
# must take it as it is rather than resample it with its own rounding
WIDE_IMAGE_TOKENS = 1 << 14
_VISION_FIELDS = ("use_gpu", "flash_attn_type", "image_min_tokens", "image_max_tokens")


class ModelError(RuntimeError):
    """llama.cpp refused a model file or an input."""


class Interrupted(RuntimeError):
    """A caller's callback asked a feeding loop to stop (a cancelled turn)."""


@dataclass
class Chunk:
    """One tokenized piece of a prompt: text tokens or one image."""
    kind: str                 # "text" | "image"
    n_tokens: int
    n_pos: int
    tokens: list[int]         # text tokens (empty for images)
    handle: int               # mtmd_input_chunk* owned by the Chunks list


class Chunks:
    """Owns an ``mtmd_input_chunks`` list; free with ``close()`` (or use as a context manager)."""

    def __init__(self, mtmd, ptr):
        self._mtmd, self.ptr = mtmd, ptr
        self.items: list[Chunk] = []
        for i in range(mtmd.mtmd_input_chunks_size(ptr)):
            c = mtmd.mtmd_input_chunks_get(ptr, i)
            kind = mtmd.mtmd_input_chunk_get_type(c)
            n = mtmd.mtmd_input_chunk_get_n_tokens(c)
            toks: list[int] = []
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n_out = ctypes.c_size_t(0)
                arr = mtmd.mtmd_input_chunk_get_tokens_text(c, ctypes.byref(n_out))
                toks = [arr[j] for j in range(n_out.value)]
            self.items.append(Chunk("text" if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT else "image",
                                    n, mtmd.mtmd_input_chunk_get_n_pos(c), toks, c))

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.items)

    @property
    def n_pos(self) -> int:
        return sum(c.n_pos for c in self.items)

    def close(self) -> None:
        if self.ptr:
            self._mtmd.mtmd_input_chunks_free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


# flash attention in the vision tower (mtmd's flash_attn_type). "auto" lets mtmd try it at the
# first encode and keep it where the backend supports it (every CPU build does); the setting
# exists so the benchmark and the parity test can compare both ways (docs/benchmarks.md).
VISION_FLASH_ATTN = {"auto": -1, "on": 1, "off": 0}
VISION_FLASH_ATTN_ENV = "GLMV_VISION_FLASH_ATTN"


def vision_flash_attn_setting(value: str | None = None) -> str:
    """``value``, else $GLMV_VISION_FLASH_ATTN, else "auto"; a ValueError names what is allowed."""
    v = (value or os.environ.get(VISION_FLASH_ATTN_ENV) or "auto").strip().lower()
    if v not in VISION_FLASH_ATTN:
        raise ValueError(f"vision flash attention {v!r}: say one of {', '.join(VISION_FLASH_ATTN)}")
    return v


def _reason() -> str:
    """llama.cpp's own last word on a failed load (": unable to allocate Vulkan0 buffer"), or ""."""
    from runtime.llama.backends import LOG_TAIL
    tail = list(LOG_TAIL)[-40:]
    for marker in ("error loading model: ", "failed to allocate ", "failed to initialize "):
        line = next((ln for ln in reversed(tail) if marker in ln), None)
        if line is not None:
            return ": " + (line.split(marker, 1)[1] if marker.startswith("error") else line.split(": ", 1)[-1]).strip()
    return ""


class LlamaPair:
    """llama_model + llama_context + mtmd_context for one GGUF pair."""

    def __init__(self, text_path: str | Path, mmproj_path: str | Path | None, *, n_ctx: int = 4096,
                 n_batch: int = 512, n_threads: int | None = None, n_gpu_layers: int = 0,
                 mmproj_on_gpu: bool = False, f32_kv: bool = False, image_max_tokens: int | None = None,
                 image_min_tokens: int | None = None, progress=None, memory=None,
                 vision_flash_attn: str | None = None, device: int = 0):
        self.ll = import_llama_cpp()
        from llama_cpp import mtmd_cpp
        self.mtmd = mtmd_cpp
        ll = self.ll
        self.model = self.ctx = self.mctx = None
        threads = n_threads or max(1, os.cpu_count() or 1)
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        # Always an explicit device list (``device``: a ggml_backend_dev_t from runtime.engine.
        # device_choice; 0: none, the CPU alone). Left NULL, llama.cpp would take every GPU ggml
        # sees (a software Vulkan device too, and one GPU twice through CUDA and Vulkan) and could
        # hand large CPU-side batches to one of them even with no layer offloaded.
        self._devices = (ctypes.c_void_p * 2)(device or None, None)
        mp.devices = ctypes.cast(self._devices, ctypes.c_void_p)
        self.device = device
        if memory is not None:   # a runtime.llama.memory_policy.MemoryPolicy: how the weights sit in RAM
            from runtime.llama.memory_policy import LOAD_MODES
            mp.load_mode = LOAD_MODES[memory.load]
            mp.use_extra_bufts = memory.repack
        if progress is not None:
            # progress(fraction) while the weights load (the server's /api/status shows it); the
            # ctypes callback object must stay referenced while llama.cpp may call it
            def _cb(fraction, _user):
                try:
                    progress(float(fraction))
                except Exception:
                    pass
                return True
            self._progress_cb = ll.llama_progress_callback(_cb)
            mp.progress_callback = self._progress_cb
        self.model = ll.llama_model_load_from_file(str(text_path).encode(), mp)
        if not self.model:
            raise ModelError(f"llama.cpp could not load the text model {text_path}{_reason()}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_embd = ll.llama_model_n_embd(self.model)
        cp = ll.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_batch, n_batch
        cp.n_threads = cp.n_threads_batch = threads
        cp.no_perf = False
        if memory is not None and not f32_kv:
            from runtime.llama.memory_policy import KV_TYPES
            cp.type_k = cp.type_v = KV_TYPES[memory.kv]
        if f32_kv:
            # reference-precision mode: f32 cache and no flash attention (its CPU kernel
            # rounds K/Q through f16, 6.7e-4 vs 7e-7 relative error in our parity test)
            cp.type_k = cp.type_v = GGML_TYPE_F32
            cp.flash_attn_type = 0
        elif n_gpu_layers == 0 and cp.type_v in (GGML_TYPE_F32, GGML_TYPE_F16) \
                and os.environ.get("GLMV_TEXT_FLASH_ATTN", "") != "on":   # "on": as before, to compare
            # No flash attention in the text model on a CPU with an unquantized cache: ggml's CPU
            # kernel takes another path for one query over >= 512 cells on several threads (split
            # across the cache, ggml_compute_forward_flash_attn_ext_f16) than for the rows of a
            # batch, so a token decoded alone and the same token in a jump-forward batch round
            # differently and near-ties tip; as plain matrix products both agree bit for bit
            # (tests/test_read_plate_stream.py). A quantized cache needs flash attention
            # (llama.cpp) and takes the per-row path either way.
            cp.flash_attn_type = 0
        self.ctx = ll.llama_init_from_model(self.model, cp)
        # the settings that change what the KV cache holds (the photo memory's key)
        self.state_signature = {f: getattr(cp, f, None) for f in _STATE_FIELDS}
        if not self.ctx:
            self.close()
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens")
        # llama.cpp may lower the batch (to n_ctx when that is smaller) and round n_ctx up; feeding more
        # than its own batch size aborts the process, so use the sizes the context really has
        self.n_ctx, self.threads = ll.llama_n_ctx(self.ctx), threads
        self.n_batch = max(1, min(n_batch, ll.llama_n_batch(self.ctx), ll.llama_n_ubatch(self.ctx)))
        if mmproj_path is not None:
            mp2 = mtmd_cpp.mtmd_context_params_default()
            mp2.use_gpu = bool(mmproj_on_gpu and device)
            mp2.device = device or None   # the same device as the text model, never mtmd's own pick
            mp2.n_threads = threads
            mp2.flash_attn_type = VISION_FLASH_ATTN[vision_flash_attn_setting(vision_flash_attn)]
            mp2.print_timings = False
            mp2.warmup = False
            # mtmd resizes a GLM-4V image itself to 8…4096 tokens with its own rounding; images.prepare
            # already puts it on transformers' grid (up to the release's 6144 tokens), so widen the
            # limits and mtmd uses the image as it is (an image already on the grid is copied, not
            # resampled). A caller may narrow them (tests do, to see mtmd's own clamp).
            mp2.image_min_tokens = image_min_tokens or 1
            mp2.image_max_tokens = image_max_tokens or WIDE_IMAGE_TOKENS
            self.mctx = mtmd_cpp.mtmd_init_from_file(str(mmproj_path).encode(), self.model, mp2)
            self.vision_signature = {f: getattr(mp2, f, None) for f in _VISION_FIELDS}
            if not self.mctx:
                self.close()
                raise ModelError(f"llama.cpp could not load the projector {mmproj_path}{_reason()}")
        self._batch = ll.llama_batch_init(n_batch, 0, 1)

    # --- prompts ------------------------------------------------------------------------------
    @property
    def marker(self) -> str:
        return self.mtmd.mtmd_default_marker().decode()

    def tokenize(self, text: str, images: list[tuple[int, int, bytes]] = ()) -> Chunks:
        """Split ``text`` at media markers; ``images`` are (width, height, RGB bytes)."""
        m = self.mtmd
        if images and not self.mctx:
            raise ModelError("this model was loaded without a projector (mmproj): it cannot take images")
        bitmaps = [m.mtmd_bitmap_init(w, h, (ctypes.c_ubyte * len(rgb)).from_buffer_copy(rgb)) for w, h, rgb in images]
        try:
            arr = (m.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            chunks = m.mtmd_input_chunks_init()
            raw = text.encode()
            inp = m.mtmd_input_text(raw, len(raw), False, True)
            if self.mctx:
                rc = m.mtmd_tokenize(self.mctx, chunks, ctypes.byref(inp), arr, len(bitmaps))
                if rc != 0:
                    m.mtmd_input_chunks_free(chunks)
                    raise ModelError({1: "the number of images does not match the image markers in the prompt",
                                      2: "the image could not be preprocessed"}.get(rc, f"mtmd_tokenize failed ({rc})"))
                return Chunks(m, chunks)
            m.mtmd_input_chunks_free(chunks)
            raise ModelError("text-only tokenization needs tokenize_text()")
        finally:
            for b in bitmaps:
                m.mtmd_bitmap_free(b)

    def tokenize_text(self, text: str, parse_special: bool = True) -> list[int]:
        raw = text.encode()
        buf = (self.ll.llama_token * (len(raw) + 16))()
        n = self.ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, parse_special)
        if n < 0:
            buf = (self.ll.llama_token * (-n))()
            n = self.ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, parse_special)
        return list(buf[:n])

    def token_piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_id(self, text: str) -> int | None:
        ids = self.tokenize_text(text, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    # --- evaluation -----------------------------------------------------------------------------
    def clear(self) -> None:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)

    def truncate(self, n_past: int) -> None:
        """Drop cache entries from position ``n_past`` on (e.g. after a cancelled answer)."""
        self.ll.llama_memory_seq_rm(self.ll.llama_get_memory(self.ctx), 0, n_past, -1)

    # --- sequence state (runtime/engine/photo_memory.py) ----------------------------------------------
    def seq_state(self) -> bytes:
        """Sequence 0 of the KV cache as llama.cpp serializes it (positions with their M-RoPE
        extents, K and V of every layer, with their types)."""
        n = self.ll.llama_state_seq_get_size(self.ctx, 0)
        buf = (ctypes.c_uint8 * n)()
        if n == 0 or self.ll.llama_state_seq_get_data(self.ctx, buf, n, 0) != n:
            raise ModelError("llama.cpp could not copy the KV cache out")
        return bytes(buf)

    def set_seq_state(self, data: bytes) -> bool:
        """Put a :meth:`seq_state` back into sequence 0; False when llama.cpp refuses it (another
        cache type or layer count, too many cells): the sequence is then empty."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return self.ll.llama_state_seq_set_data(self.ctx, buf, len(data), 0) == len(data)

    def encode_image(self, chunk: Chunk) -> np.ndarray:
        """Run the vision tower on one image chunk; returns [n_tokens, n_embd] float32."""
        if chunk.kind != "image":
            raise ValueError("not an image chunk")
        rc = self.mtmd.mtmd_encode_chunk(self.mctx, chunk.handle)
        if rc != 0:
            raise ModelError(f"image encoding failed ({rc})")
        ptr = self.mtmd.mtmd_get_output_embd(self.mctx)
        return np.ctypeslib.as_array(ptr, shape=(chunk.n_tokens * self.n_embd,)).reshape(chunk.n_tokens, self.n_embd).copy()

    def decode_image(self, chunk: Chunk, embd: np.ndarray, n_past: int, on_batch=None) -> int:
        """Put already-encoded image embeddings into the cache; returns the new n_past.

        ``on_batch(n_tokens_done)`` runs after each batch (progress); when it returns True the
        rest is not fed and :class:`Interrupted` is raised: the cache then holds part of the
        image, which the caller must cut back (``truncate(n_past)``)."""
        new_past = self.ll.llama_pos(0)
        e = np.ascontiguousarray(embd, dtype=np.float32)
        cb, state = ctypes.cast(None, self.mtmd.mtmd_helper_post_decode_callback), {"done": 0, "stop": False}
        if on_batch is not None:
            def _cb(view, _user):
                # an exception cannot cross a ctypes callback: keep the answer, stop with a nonzero code
                state["done"] += view.contents.n_tokens
                try:
                    state["stop"] = bool(on_batch(state["done"]))
                except Exception:
                    state["stop"] = True
                return 1 if state["stop"] else 0
            cb = self.mtmd.mtmd_helper_post_decode_callback(_cb)
        rc = self.mtmd.mtmd_helper_decode_image_chunk(
            self.mctx, self.ctx, chunk.handle, e.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            n_past, 0, self.n_batch, ctypes.byref(new_past), cb, None)
        if state["stop"]:
            raise Interrupted(f"stopped after {state['done']} of {chunk.n_tokens} image tokens")
        if rc != 0:
            raise ModelError(f"decoding the image into the context failed ({rc})")
        return new_past.value

    def decode_tokens(self, tokens: list[int], n_past: int, logits: str = "last") -> tuple[int, np.ndarray | None]:
        """Feed text tokens at positions n_past…; ``logits`` is "none", "last" (copied out),
        "flag" (computed for the last token, left in the context for a sampler), "flag_all" (for
        every token, left in the context: jump-forward samples each row) or "all" (copied out)."""
        if n_past + len(tokens) > self.n_ctx:
            raise ModelError(f"context full: {n_past} + {len(tokens)} tokens > n_ctx {self.n_ctx}")
        ll, b = self.ll, self._batch
        rows: list[np.ndarray] = []
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start:start + self.n_batch]
            b.n_tokens = len(part)
            for i, t in enumerate(part):
                b.token[i] = t
                b.pos[i] = n_past + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                last = start + i == len(tokens) - 1
                b.logits[i] = logits in ("all", "flag_all") or (logits in ("last", "flag") and last)
            rc = ll.llama_decode(self.ctx, b)
            if rc != 0:
                raise ModelError(f"llama_decode failed ({rc})")
            if logits == "all":
                rows += [self.logits(i) for i in range(len(part))]
        n_past += len(tokens)
        if logits == "all":
            return n_past, np.stack(rows)
        if logits == "last":
            return n_past, self.logits(-1)
        return n_past, None

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """Threads for one-token passes and for batches, from the next pass on (llama.cpp reads them
        per pass; the vision tower keeps the count it was loaded with)."""
        self.ll.llama_set_n_threads(self.ctx, int(n_threads), int(n_threads_batch))

    def logits(self, i: int = -1) -> np.ndarray:
        ptr = self.ll.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        ll = getattr(self, "ll", None)
        if ll is None:
            return
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self.mctx:
            self.mtmd.mtmd_free(self.mctx)
            self.mctx = None
        if self.ctx:
            ll.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            ll.llama_model_free(self.model)
            self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
