"""Photo memory: what a photo cost, kept on disk so that reopening it is almost free.

Reading a photo costs the vision tower (seconds to minutes on a CPU) and the prompt over its
image tokens. Both are pure functions of the photo, the model files and the settings that change
the numbers, so they are stored in the data folder and reused by any later session, process or
day:

* ``kv``   — llama.cpp's sequence state (``llama_state_seq_get_data``) of the prompt prefix up to
  and including the image — the part every question about this photo shares — with the
  session's item list for that prefix. Restoring it skips the vision tower *and* the prompt.
* ``embd`` — the vision tower's output for the photo. Used when the prefix differs (another
  text model of the same projector, another template): the tower is skipped, the prompt is fed.

Each entry is one file: a fixed header (magic, version, kind, key, sizes, sha256 of the rest),
a JSON meta block, the payload. A damaged, truncated or foreign file is noticed, dropped and
recomputed with a one-line note; a read-only or full data folder turns storing off with one
note. Entries are written to a unique staging name and renamed (two processes sharing one data
folder see an old entry or a whole new one, never a mix) and never reach FAT's 4 GiB file limit.
The folder is bounded by bytes; the least recently used entries go first (a hit touches its
file's mtime).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_MAX_BYTES = 2 * 2**30       # suits a USB stick; GLMV_PHOTO_MEMORY or EngineOptions.photo_memory_bytes
FAT_FILE_LIMIT = 4 * 2**30 - 1      # FAT32's largest file
ENV = "GLMV_PHOTO_MEMORY"           # e.g. "2G", "500M", "0" (off)
MAGIC, VERSION = b"GLMVPMEM", 1
HEADER = struct.Struct("<8sHH32sIQ32s")   # magic, version, kind, key, meta bytes, payload bytes, sha256(meta+payload)
KINDS = {"kv": 1, "embd": 2}
SUFFIX = ".glmvpm"
STALE_STAGING_S = 3600              # a staging file this old was left by a process that died mid-write
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

# errno -> why storing stopped (one note, then no more writes in this process)
_WRITE_FAILURES = {
    errno.EROFS: "the data folder is read-only", errno.EACCES: "the data folder is not writable",
    errno.EPERM: "the data folder is not writable", errno.ENOSPC: "the data folder is full",
    errno.EDQUOT: "the data folder's quota is used up", errno.EFBIG: "the file system refused a file that large",
}


def parse_size(text: str) -> int:
    """'2G', '512M', '1.5G', '0' -> bytes (binary units); ValueError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:IB|B)?\s*", text.upper())
    if not m:
        raise ValueError(f"{text!r} is not a size (say e.g. 2G, 500M or 0 to turn the photo memory off)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _stderr_note(msg: str) -> None:
    print(f"glmv: photo memory: {msg}", file=sys.stderr)


@dataclass
class Entry:
    meta: dict
    payload: bytes


class PhotoMemory:
    """The on-disk store: one folder of entries, bounded by ``max_bytes``."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, kv_identity: object = (),
                 vision_identity: object = (), note: Callable[[str], None] | None = None):
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self.kv_identity, self.vision_identity = kv_identity, vision_identity
        self._note = note or _stderr_note
        self.writable = True
        self.notes: list[str] = []
        self.hits = {"kv": 0, "embd": 0}

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self._note(msg)

    @staticmethod
    def key(*parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, kind: str, key: str) -> Path:
        return self.folder / f"{kind}-{key}{SUFFIX}"

    # --- reading ------------------------------------------------------------------------------
    def get(self, kind: str, key: str) -> Entry | None:
        """The entry, or None (absent, vanished, or bad — a bad one is dropped with a note)."""
        p = self.path(kind, key)
        try:
            with open(p, "rb") as f:
                head = f.read(HEADER.size)
                problem = self._check_header(head, kind, key, os.fstat(f.fileno()).st_size)
                if problem is None:
                    body = f.read()
        except FileNotFoundError:
            return None     # never stored, or another process evicted it between listing and reading
        except OSError as e:
            self.note(f"cannot read stored {kind} entry {key[:12]} ({e.strerror or e}): recomputing")
            return None
        if problem is None:
            _, _, _, _, n_meta, n_payload, digest = HEADER.unpack(head)
            if len(body) != n_meta + n_payload:
                problem = "truncated"
            elif hashlib.sha256(body).digest() != digest:
                problem = "damaged (checksum mismatch)"
        if problem is None:
            try:
                meta = json.loads(body[:n_meta])
            except ValueError:
                meta = None
            if not isinstance(meta, dict):
                problem = "damaged (unreadable meta)"
        if problem is not None:
            self.drop(kind, key, f"stored {kind} entry {key[:12]} is {problem}: recomputing")
            return None
        try:
            os.utime(p)     # most recently used (LRU by mtime); a read-only folder keeps the old order
        except OSError:
            pass
        self.hits[kind] += 1
        return Entry(meta, body[n_meta:])

    @staticmethod
    def _check_header(head: bytes, kind: str, key: str, size: int) -> str | None:
        if len(head) < HEADER.size:
            return "truncated"
        magic, version, kind_code, raw_key, n_meta, n_payload, _ = HEADER.unpack(head)
        if magic != MAGIC:
            return "not a photo memory entry"
        if version != VERSION:
            return f"from another version ({version})"
        if kind_code != KINDS[kind] or raw_key != bytes.fromhex(key):
            return "foreign (it belongs to another key)"
        if size != HEADER.size + n_meta + n_payload:
            return "truncated" if size < HEADER.size + n_meta + n_payload else "damaged (trailing bytes)"
        return None

    def drop(self, kind: str, key: str, why: str | None = None) -> None:
        if why:
            self.note(why)
        try:
            self.path(kind, key).unlink(missing_ok=True)
        except OSError:
            pass

    # --- writing ------------------------------------------------------------------------------
    def put(self, kind: str, key: str, meta: dict, payload: bytes) -> bool:
        """Store an entry; False (with a note) when it cannot or should not be stored."""
        if not self.writable:
            return False
        meta_b = json.dumps(meta, separators=(",", ":")).encode()
        size = HEADER.size + len(meta_b) + len(payload)
        if size > FAT_FILE_LIMIT:
            self.note(f"an entry of {size / 2**30:.1f} GiB would not fit a FAT stick (4 GiB per file): not stored")
            return False
        if size > self.max_bytes:
            self.note(f"an entry of {size / 2**20:.0f} MiB exceeds the bound of {self.max_bytes / 2**20:.0f} MiB "
                      f"(set {ENV}): not stored")
            return False
        digest = hashlib.sha256(meta_b + payload).digest()
        head = HEADER.pack(MAGIC, VERSION, KINDS[kind], bytes.fromhex(key), len(meta_b), len(payload), digest)
        final = self.path(kind, key)
        # a name of this writer's own, renamed onto the entry below: two processes storing the
        # same photo never write into one file, and a reader sees a whole entry or none
        staging = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.trim(self.max_bytes - size)
            if shutil.disk_usage(self.folder).free < size + (16 << 20):
                raise OSError(errno.ENOSPC, "no space left")
            from runtime.common.files import atomic_write_bytes   # the project's one atomic write
            atomic_write_bytes(staging, head + meta_b + payload)
        except OSError as e:
            try:
                staging.unlink(missing_ok=True)
            except OSError:
                pass
            why = _WRITE_FAILURES.get(getattr(e, "errno", None), f"storing failed ({getattr(e, 'strerror', None) or e})")
            self.writable = False
            self.note(f"{why} ({self.folder}): photos are not remembered in this session")
            return False
        try:
            os.replace(staging, final)
        except OSError:
            # Windows refuses to replace a file another process has open: that process is reading
            # this very entry, so skip this write and keep storing
            staging.unlink(missing_ok=True)
            return False
        return True

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every entry, oldest first; entries vanishing meanwhile are skipped."""
        out = []
        try:
            names = list(self.folder.iterdir())
        except OSError:
            return []
        now = time.time()
        for p in names:
            try:
                st = p.stat()
            except OSError:
                continue        # removed by another process since the listing
            if p.name.endswith(SUFFIX) and not p.name.startswith("."):
                out.append((st.st_mtime, st.st_size, p))
            elif p.name.startswith(".") and SUFFIX in p.name and now - st.st_mtime > STALE_STAGING_S:
                p.unlink(missing_ok=True)   # a writer died mid-write
        return sorted(out, key=lambda e: (e[0], e[2].name))

    def usage(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def trim(self, limit: int) -> None:
        """Evict least recently used entries until the folder holds at most ``limit`` bytes."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, p in entries:
            if total <= limit:
                break
            try:
                p.unlink(missing_ok=True)
            except OSError:
                continue
            total -= size


# --- the engine's memory, and the hooks runtime/engine/session.py calls around the image ---------------
def for_engine(engine) -> PhotoMemory | None:
    """The engine's photo memory from its options (None: off)."""
    opts = engine.options
    folder = getattr(opts, "photo_memory_dir", None)
    if folder is None and opts.cache_dir is not None:
        folder = Path(opts.cache_dir).parent / "photo-memory"   # beside the answer cache, in the data folder
    if folder is None:
        return None
    limit = getattr(opts, "photo_memory_bytes", None)
    if limit is None:
        try:
            limit = parse_size(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT_MAX_BYTES
        except ValueError as e:
            _stderr_note(f"{ENV}: {e}; using {DEFAULT_MAX_BYTES // 2**30} GiB")
            limit = DEFAULT_MAX_BYTES
    if limit <= 0:
        return None
    import llama_cpp
    from runtime.llama.backends import ensure_loaded
    pair = engine.pair
    build = [llama_cpp.__version__, ensure_loaded().cpu_variant]
    # everything that changes the numbers: the files, the build and CPU kernels, where layers run,
    # the cache types and batch sizes, how the weights sit (repacked kernels round differently).
    # Not the thread count (logits measured bitwise equal at 1 and 2 threads, stored at one and
    # reopened at the other) nor n_ctx (the cells hold the same values; a prompt too long for the
    # context is refused before any lookup).
    # the device computes with its own kernels: a reading stored on Vulkan is not reopened on the CPU
    dev = getattr(engine, "device", None)
    device = [dev.backend, dev.name, dev.driver] if dev is not None else ["cpu"]
    vision = [engine.model_id[3:], build, engine.mmproj_on_gpu, getattr(pair, "vision_signature", None)]
    if device != ["cpu", "CPU", ""]:   # the CPU's key as before: photo memories already stored stay valid
        vision.append(device)
    kv = [engine.model_id, build, engine.n_gpu_layers, getattr(pair, "state_signature", None), pair.n_batch,
          repr(getattr(engine, "memory_policy", None)), vision]
    return PhotoMemory(Path(folder), limit, kv_identity=kv, vision_identity=vision)


def _items_json(items: list) -> list:
    return [i if isinstance(i, int) else ["image", i.image_id, i.n_pos] for i in items]


def _memory(session) -> PhotoMemory | None:
    mem = getattr(session.engine, "photo_memory", None)
    return mem if mem is not None and session.image is not None else None


def recall_prefix(session, items: list, n_past: int, start: int) -> tuple[int, int]:
    """After ``_rewind``: when the cache lacks the image, restore the stored prefix up to and
    including it. Returns (n_past, items already cached), unchanged on a miss."""
    mem = _memory(session)
    idx = next((i for i, it in enumerate(items) if not isinstance(it, int)), None)
    if mem is None or idx is None or start > idx:
        return n_past, start
    prefix = items[:idx + 1]
    key = mem.key("kv", mem.kv_identity, _items_json(prefix))
    hit = mem.get("kv", key)
    if hit is None:
        return n_past, start
    eng, pair = session.engine, session.engine.pair
    pair.clear()
    if hit.meta.get("items") != _items_json(prefix) or not pair.set_seq_state(hit.payload):
        pair.clear()
        eng.kv = []
        mem.drop("kv", key, "llama.cpp did not take a stored prefix back: recomputing")
        return 0, 0
    eng.kv = list(prefix)
    return sum(i.n_pos if not isinstance(i, int) else 1 for i in prefix), idx + 1


def recall(session, items: list, chunk, n_past: int, start: int) -> tuple[int, int]:
    """The session's one hook after ``_rewind``: the stored prefix if there is one, else the
    stored image encoding (kept in ``session.encoding``). Returns (n_past, items already cached)."""
    n_past, start = recall_prefix(session, items, n_past, start)
    if chunk is not None and session.encoding.embd is None and any(not isinstance(i, int) for i in items[start:]):
        session.encoding.embd = recall_embeddings(session, chunk)
    return n_past, start


def _embd_key(mem: PhotoMemory, session, chunk) -> str:
    return mem.key("embd", mem.vision_identity, session.image_sha256, chunk.n_tokens, chunk.n_pos)


def recall_embeddings(session, chunk) -> np.ndarray | None:
    """The vision tower's stored output for this photo, or None."""
    mem = _memory(session)
    if mem is None:
        return None
    key = _embd_key(mem, session, chunk)
    hit = mem.get("embd", key)
    if hit is None:
        return None
    shape = (chunk.n_tokens, session.engine.pair.n_embd)
    if hit.meta.get("shape") != list(shape) or len(hit.payload) != 4 * shape[0] * shape[1]:
        mem.drop("embd", key, "a stored image encoding has the wrong shape: recomputing")
        return None
    return np.frombuffer(hit.payload, dtype=np.float32).reshape(shape).copy()


def remember_embeddings(session, chunk, embd: np.ndarray) -> None:
    mem = _memory(session)
    if mem is not None and mem.writable:
        e = np.ascontiguousarray(embd, dtype=np.float32)
        mem.put("embd", _embd_key(mem, session, chunk), {"shape": list(e.shape)}, e.tobytes())


def remember_prefix(session) -> None:
    """Right after the image went into the cache (which then holds exactly the shared prefix)."""
    mem = _memory(session)
    eng = session.engine
    if mem is None or not mem.writable or not eng.kv or isinstance(eng.kv[-1], int):
        return
    from runtime.llama.pair import ModelError
    prefix = _items_json(eng.kv)
    try:
        state = eng.pair.seq_state()
    except ModelError as e:     # answering goes on; only this photo is not remembered
        mem.note(f"{e}: this photo is not remembered")
        return
    mem.put("kv", mem.key("kv", mem.kv_identity, prefix), {"items": prefix}, state)
