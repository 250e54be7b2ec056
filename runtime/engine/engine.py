"""The one Python API the CLI, the HTTP API and the UI use: load a GGUF pair, open sessions."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from runtime.engine import photo_memory
from runtime.engine.answer_cache import AnswerCache
from runtime.engine.hardware import physical_cores, usable_ram
from runtime.llama.cpu_share import CpuShare
from runtime.llama.memory_policy import MemoryPolicy, choose as choose_memory_policy
from runtime.engine.generate import Step
from runtime.engine.images import PreparedImage
from runtime.engine.device_choice import DeviceChoice, DeviceRequest, choose as choose_device
from runtime.llama.pair import LlamaPair, ModelError
from runtime.engine.model_files import check_pair, manifest_beside, verify_checksums
from runtime.engine.sampling import SamplingOptions, model_defaults
from runtime.engine.session import Session

DEFAULT_CTX = 8192  # GLM-4.6V's KV cache is small (2 KV heads): 8k tokens ≈ 320 MiB in f16


@dataclass
class EngineOptions:
    n_ctx: int = DEFAULT_CTX
    n_threads: int | None = None
    n_gpu_layers: int = -1          # -1: decide from free VRAM (see hardware.plan_offload)
    device: str | None = None       # auto | cpu | cuda | vulkan | cuda:N | vulkan:N; None: $GLMV_DEVICE, else auto
    verify: bool = False
    cache_dir: Path | None = None   # answer cache; None disables it
    f32_kv: bool = False            # reference precision (f32 cache, no flash attention): parity tests
    progress: Callable[[float], None] | None = None  # model-load progress 0..1 (the server's status)
    # photo memory (runtime/engine/photo_memory.py): a reopened photo skips the vision tower and the prompt.
    # None: beside the answer cache (<data folder>/photo-memory), off without one (--no-cache)
    photo_memory_dir: Path | None = None
    photo_memory_bytes: int | None = None  # its bound; None: $GLMV_PHOTO_MEMORY or 2 GiB; 0 turns it off
    memory: "MemoryPolicy | None" = None  # how the weights sit in RAM; None: chosen from this machine's RAM
    vision_flash_attn: str | None = None  # auto | on | off; None: $GLMV_VISION_FLASH_ATTN, else auto
    # feed the text a JSON grammar forces in one batch, verified (runtime/engine/jump_forward.py);
    # None: on unless $GLMV_JUMP_FORWARD=0
    jump_forward: bool | None = None


class Engine:
    """One loaded model. One generation at a time (``lock``); sessions share its KV cache."""

    def __init__(self, text_path: str | Path, mmproj_path: str | Path, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.text_info, self.mmproj_info = check_pair(text_path, mmproj_path)
        # the manifest beside the pair (None: none, or damaged), read once: --verify here, and
        # callers asking for its quant type or photo size get the same read (Manifest.in_folder)
        self.manifest = manifest_beside(text_path)
        if self.options.verify:
            verify_checksums(Path(text_path), Path(mmproj_path), self.manifest)
        self.text_path, self.mmproj_path = Path(text_path), Path(mmproj_path)
        # how many threads each reading uses, from the cores this process may use and the load
        self.cpu = CpuShare(physical_cores(), fixed=self.options.n_threads)
        t0 = time.perf_counter()
        self.device = self._choose_device()
        try:
            self.pair = self._load(self.device)
        except ModelError as e:
            if self.device.backend == "cpu":
                raise
            # a device that cannot hold the model (allocation refused, driver error): the CPU reads
            # (the faces say it: the CLI's device line, the server's status, doctor)
            self.device = self.device.as_cpu(f"{self.device.backend_label} {self.device.name} could not load "
                                             f"the model ({e}); using the CPU")
            self.pair = self._load(self.device)
        self.load_ms = 1000 * (time.perf_counter() - t0)
        self.template = self.text_info.get("tokenizer.chat_template") or ""
        # the model authors' sampling settings (general.sampling.*); greedy for a file without them
        self.sampling = model_defaults(self.text_info.kv)
        st_t, st_m = self.text_path.stat(), self.mmproj_path.stat()
        self.model_id = [self.text_path.name, st_t.st_size, int(st_t.st_mtime), self.mmproj_path.name,
                         st_m.st_size, int(st_m.st_mtime)]
        self.answer_cache = AnswerCache(self.options.cache_dir) if self.options.cache_dir else None
        self.photo_memory = photo_memory.for_engine(self)
        from runtime.engine.jump_forward import enabled_by_default
        self.jump_forward = enabled_by_default() if self.options.jump_forward is None else self.options.jump_forward
        self.lock = threading.RLock()
        self.kv: list = []          # what the KV cache holds, item by item (see session.py)
        self.kv_owner: Session | None = None

    def _choose_device(self) -> DeviceChoice:
        from runtime.llama.backends import ensure_loaded, import_llama_cpp
        import_llama_cpp()
        return choose_device(DeviceRequest.from_env(self.options.device), ensure_loaded(),
                             text_bytes=self.text_info.size, n_layers=int(self.text_info.get("glm4.block_count") or 40),
                             mmproj_bytes=self.mmproj_info.size, usable_ram=usable_ram(),
                             n_gpu_layers=self.options.n_gpu_layers)

    def _load(self, choice: DeviceChoice) -> LlamaPair:
        self.n_gpu_layers, self.mmproj_on_gpu = choice.n_gpu_layers, choice.mmproj_on_gpu
        if self.options.memory is not None:
            self.memory_policy, self.memory_why = self.options.memory, "asked for"
        else:
            self.memory_policy, self.memory_why = choose_memory_policy(
                usable_ram(), self.text_info.size + (self.mmproj_info.size if self.mmproj_info else 0),
                gpu_offload=self.n_gpu_layers > 0, shares_ram=choice.uma)
        return LlamaPair(self.text_path, self.mmproj_path, n_ctx=self.options.n_ctx, n_threads=self.cpu.cores,
                         n_gpu_layers=self.n_gpu_layers, mmproj_on_gpu=self.mmproj_on_gpu,
                         f32_kv=self.options.f32_kv, progress=self.options.progress, memory=self.memory_policy,
                         vision_flash_attn=self.options.vision_flash_attn,
                         device=choice.device.handle if choice.device else 0)

    def session(self, image: PreparedImage | None, *, enable_thinking: bool = False) -> Session:
        return Session(self, image, enable_thinking=enable_thinking)

    def ask(self, image: PreparedImage | None, question: str, *, max_tokens: int = 256,
            enable_thinking: bool = False, sampling: SamplingOptions | None = None,
            use_cache: bool = True) -> Iterator[Step]:
        """One question about one photo (a one-turn session)."""
        yield from self.session(image, enable_thinking=enable_thinking).ask(
            question, max_tokens=max_tokens, sampling=sampling, use_cache=use_cache)

    def close(self) -> None:
        self.pair.close()

