"""Where a nameplate reading's time goes on this machine, against what the CPU can do.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. .venv/bin/python bench/time_breakdown.py \\
        --model-dir build/bench/full/quants/Q4_0 [--runs 2] [--tokens 32] [--json OUT]

The first answer's parts — decoding the photo file, the vision tower, feeding the prompt (image
embeddings and text) — and the decode, each set against the machine measured in the same run:
- compute: FLOPs per image token (vision tower, counted from the mmproj's tensor shapes: every
  matrix product's weights per patch, 4 patches per image token, plus attention over the image)
  and per prompt token (the text model's matrices plus attention) against the time measured →
  GFLOP/s achieved, beside the peak of a float32 matrix product (numpy/OpenBLAS, all cores);
- memory: bytes read per decoded token (every weight but the embedding table, plus the KV cache
  so far) × tokens/s → GB/s achieved, beside a streaming read of a 1 GiB array on all cores.
So the next person sees which part runs near the machine's limit and which does not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHOTO = ROOT / "assets" / "samples" / "plate-synthetic.jpg"


def tensor_numels(path: Path) -> dict[str, tuple[int, ...]]:
    from gguf import GGUFReader
    r = GGUFReader(str(path))
    return {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}


def kv(path: Path) -> dict:
    from gguf import GGUFReader
    r = GGUFReader(str(path))
    out = {}
    for k, f in r.fields.items():
        if len(f.data) == 1 and f.types and f.types[0].name in ("UINT32", "INT32", "FLOAT32", "UINT64"):
            out[k] = f.parts[f.data[0]].tolist()[0]
    return out


def matmul_flops(shapes: dict, prefix: str) -> int:
    """2 × the weights of every 2-D matrix under ``prefix`` (one multiply-add per weight per token)."""
    return 2 * sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith(prefix) and n.endswith(".weight")
                   and len(s) == 2)


def cpu_peak(seconds: float = 3.0) -> float:
    """GFLOP/s of a float32 2048² matrix product (numpy's BLAS, its own threads: all cores)."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        n += 1
    return n * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9


def read_bandwidth(threads: int, gib: float = 1.0, rounds: int = 5) -> float:
    """GB/s reading a ``gib`` GiB float32 array, split across ``threads`` threads (numpy releases
    the GIL in its reductions)."""
    x = np.ones(int(gib * 2 ** 30 // 4), dtype=np.float32)
    parts = np.array_split(x, threads)
    best = 0.0
    for _ in range(rounds):
        ts = [threading.Thread(target=p.sum) for p in parts]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = max(best, x.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from runtime.engine import images
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.generate import collect
    from runtime.engine.model_files import pixel_budget_for
    from runtime.engine.model_locator import find_model_files
    from runtime.engine.sampling import SamplingOptions
    files = find_model_files(Path(a.model_dir))
    eng = Engine(files.text, files.mmproj, EngineOptions(n_ctx=4096, photo_memory_bytes=0))
    threads = eng.cpu.cores
    budget = pixel_budget_for(files.text)
    runs = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        img = images.load(PHOTO, pixel_budget=budget)
        photo_s = time.perf_counter() - t0
        _, _, last = collect(eng.session(img).ask("Describe this nameplate in detail.", max_tokens=a.tokens,
                                                  sampling=SamplingOptions(), use_cache=False))
        t = last.timings
        runs.append({"photo_s": photo_s, "vision_s": t.image_encode_ms / 1000,
                     "prompt_s": (t.prefill_ms - t.image_encode_ms) / 1000, "ttft_s": t.ttft_ms / 1000,
                     "decode_tps": t.decode_tps, "prompt_tokens": last.prompt_tokens, "tokens": last.completion_tokens})
    s = eng.session(img)
    with eng.pair.tokenize(s.prompt("Describe this nameplate in detail."), [img.as_tuple()]) as chunks:
        with_image = sum(c.n_tokens for c in chunks.items if c.kind == "image")
    eng.close()

    vshapes, tshapes = tensor_numels(files.mmproj), tensor_numels(files.text)
    vkv, tkv = kv(files.mmproj), kv(files.text)
    d_v = int(vkv.get("clip.vision.embedding_length", 1536))
    n_vl = int(vkv.get("clip.vision.block_count", 24))
    merge = int(vkv.get("clip.vision.spatial_merge_size", 2)) ** 2
    n_tok = runs[0]["prompt_tokens"]
    patches = with_image * merge
    # per image token: the tower's matrices for each of its patches, attention over all patches, the merger
    v_flops_tok = merge * (matmul_flops(vshapes, "v.blk.") + 4 * n_vl * patches * d_v) + matmul_flops(vshapes, "mm.")
    d_t = int(tkv.get("glm4.embedding_length", 4096))
    n_tl = int(tkv.get("glm4.block_count", 40))
    n_head_kv = int(tkv.get("glm4.attention.head_count_kv", 2))
    n_head = int(tkv.get("glm4.attention.head_count", 32))
    head_dim = d_t // n_head
    t_flops_tok = matmul_flops(tshapes, "blk.") + 4 * n_tl * (n_tok / 2) * n_head * head_dim
    text_bytes = files.text.stat().st_size
    emb = int(np.prod(tshapes.get("token_embd.weight", (0,))))
    emb_bytes = text_bytes * emb / max(1, sum(int(np.prod(s)) for s in tshapes.values()))
    kv_bytes = lambda n: n * n_tl * 2 * n_head_kv * head_dim * 2   # noqa: E731 - f16 K and V per cell
    bytes_tok = text_bytes - emb_bytes + kv_bytes(n_tok + a.tokens // 2)

    peak = cpu_peak()
    bw = read_bandwidth(threads)
    med = lambda k: statistics.median(r[k] for r in runs)   # noqa: E731
    vision_gflops = v_flops_tok * with_image / med("vision_s") / 1e9
    prompt_gflops = t_flops_tok * n_tok / med("prompt_s") / 1e9
    decode_gbs = bytes_tok * med("decode_tps") / 1e9
    out = {"runs": runs, "threads": threads, "image_tokens": with_image, "prompt_tokens": n_tok,
           "vision_gflop_per_image_token": v_flops_tok / 1e9, "text_gflop_per_token": t_flops_tok / 1e9,
           "decode_bytes_per_token": bytes_tok, "sgemm_peak_gflops": peak, "read_bandwidth_gbs": bw,
           "vision_gflops": vision_gflops, "prompt_gflops": prompt_gflops, "decode_gbs": decode_gbs}
    print(f"{files.text.name} + {files.mmproj.name}, {threads} threads, {PHOTO.name}: {n_tok} prompt tokens "
          f"({with_image} image tokens), {a.runs} runs (median; range in --json)\n")
    print("| part | time s | work | achieved | machine (same run) | share of it |")
    print("|---|---:|---|---:|---:|---:|")
    print(f"| photo file → pixels | {med('photo_s'):.2f} | decode + resize | — | — | — |")
    print(f"| vision tower | {med('vision_s'):.1f} | {v_flops_tok / 1e9:.1f} GFLOP per image token × {with_image} | "
          f"{vision_gflops:.0f} GFLOP/s | {peak:.0f} GFLOP/s (f32 sgemm) | {vision_gflops / peak:.0%} |")
    print(f"| prompt (image embeddings + text) | {med('prompt_s'):.1f} | {t_flops_tok / 1e9:.1f} GFLOP per token × {n_tok} | "
          f"{prompt_gflops:.0f} GFLOP/s | {peak:.0f} GFLOP/s (f32 sgemm) | {prompt_gflops / peak:.0%} |")
    print(f"| first answer | {med('ttft_s'):.1f} | | | | |")
    print(f"| decode | {1 / med('decode_tps'):.2f} per token | {bytes_tok / 2 ** 30:.2f} GiB read per token | "
          f"{decode_gbs:.1f} GB/s | {bw:.1f} GB/s (array read) | {decode_gbs / bw:.0%} |")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
