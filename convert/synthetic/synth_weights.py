"""The synthetic checkpoint's weights: seeded random tensors, rounded to BF16 and streamed into
safetensors shards.

Each tensor's values depend only on (seed, tensor name), and are generated in bounded blocks, so the
full-size checkpoint (~20 GB) is written without ever holding a whole tensor in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from convert.synthetic.synth_spec import _INIT

_CHUNK = 1 << 24  # elements per generation step: bounds memory for the 620M-element embeddings


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype("<u2")  # safetensors is little-endian


def tensor_chunks(name: str, shape: tuple[int, ...], init: str, seed: int):
    """Yield the tensor as float32 row blocks; the stream depends only on (seed, name)."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, key])
    mean, std = _INIT[init]
    if std is None:
        std = 1.0 / np.sqrt(float(np.prod(shape[1:])))
    row = int(np.prod(shape[1:]))
    rows_per = max(1, _CHUNK // max(row, 1))
    for r in range(0, shape[0], rows_per):
        n = min(rows_per, shape[0] - r)
        x = rng.standard_normal((n, *shape[1:]), dtype=np.float32)
        x *= np.float32(std)
        x += np.float32(mean)
        yield x


def tensor_values(name: str, shape: tuple[int, ...], init: str, seed: int) -> np.ndarray:
    """The whole tensor as float32 (before bf16 rounding); for tests and small tensors."""
    return np.concatenate(list(tensor_chunks(name, shape, init, seed)), axis=0)


def _split_shards(table, n: int) -> list[list]:
    sizes = [2 * int(np.prod(s)) for _, s, _ in table]
    total, shards, acc = sum(sizes), [[] for _ in range(n)], 0
    for row, size in zip(table, sizes):
        k = min(n - 1, acc * n // total)
        shards[k].append(row)
        acc += size
    return [s for s in shards if s]


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.t0 = self.last = time.monotonic()

    def add(self, n: int, final: bool = False):
        self.done += n
        now = time.monotonic()
        if self.enabled and (final or now - self.last >= 3.0):
            self.last = now
            print(f"synth: {self.done / 2**20:.0f}/{self.total / 2**20:.0f} MiB "
                  f"({100 * self.done / max(self.total, 1):.0f}%, {now - self.t0:.0f}s)", file=sys.stderr, flush=True)


def _write_safetensors(path: Path, rows, seed: int, progress: _Progress) -> None:
    # Streamed straight into ``path``, not through the atomic write: a shard can be gigabytes (too big
    # to hold in memory), and it is written inside the checkpoint's staging folder, which
    # ``make_checkpoint`` publishes whole by one rename once every file is complete.
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in rows:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, shape, init in rows:
            for chunk in tensor_chunks(name, shape, init, seed):
                data = to_bf16(chunk)
                f.write(data.tobytes())
                progress.add(data.nbytes)
        f.flush()
        os.fsync(f.fileno())
