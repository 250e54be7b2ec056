"""The Vulkan backend against the CPU path, side by side, on synthetic GLM-4.6V models.

    PYTHONPATH=. .venv/bin/python bench/vulkan_bench.py --model-dir build/bench/tiny/gguf \\
        --model-dir build/bench/medium/gguf [--repeat 3] [--max-tokens 32] [--json build/bench/vulkan.json]

For each model and each device (``cpu``, ``vulkan``) a fresh child process loads the pair and asks
one question about the sample plate at the model's image budget, greedy, then asks it again
``--repeat`` times (photo memory and answer cache off, so the vision tower and the prompt run
each time). The first answer on Vulkan includes compiling the shaders it needs (a driver's
pipeline compile, cached by the driver between runs only where it has a disk cache); the warm
figures are the medians of the repeats, with their range. Runs alternate cpu/vulkan per
repetition so a noisy stretch of a shared machine lands on both.

On a machine whose only Vulkan device is Mesa's lavapipe (software), ``vulkan`` is that device:
the ratio then shows the backend's overhead on the CPU, not the speed a GPU gives.

``--memory LIMIT_GIB`` instead loads each model in a cgroup v1 memory group of that size (page
cache counted, caches dropped first), on the CPU and with every layer and the projector on the
Vulkan device (``--gpu-layers``, default all), and asks one short text question: the group's peak
and the peak resident memory (anonymous + mapped file pages) show whether the weights sit in RAM
once or twice when the GPU's memory is system RAM (lavapipe's is, like an integrated GPU's).

    PYTHONPATH=. .venv/bin/python bench/vulkan_bench.py --model-dir build/bench/full/quants/Q4_K_M --memory 8
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-en-metal.jpg"
QUESTION = "What is the serial number on this nameplate?"


def child(model_dir: str, device: str, repeat: int, max_tokens: int, photo: str, budget: int = 0) -> dict:
    """In the child: load, answer once cold, then ``repeat`` times warm; timings as JSON."""
    sys.path.insert(0, str(ROOT))
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.images import prepare
    from runtime.engine.model_files import pixel_budget_for
    from runtime.engine.model_locator import find_model_files
    from runtime.engine.sampling import SamplingOptions
    text, mmproj = find_model_files(Path(model_dir))
    t0 = time.perf_counter()
    eng = Engine(text, mmproj, EngineOptions(n_ctx=4096, device=device))
    load_s = time.perf_counter() - t0
    img = prepare(Path(photo).read_bytes(), pixel_budget=budget or pixel_budget_for(text))
    runs = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        last = None
        for last in eng.ask(img, QUESTION, max_tokens=max_tokens, use_cache=False,
                            sampling=SamplingOptions(temperature=0.0)):
            pass
        t = last.timings
        runs.append({"wall_s": time.perf_counter() - t0, "vision_s": t.image_encode_ms / 1000,
                     "ttft_s": t.ttft_ms / 1000, "decode_tps": t.decode_tps, "n": t.n_decoded,
                     "answer": last.text})
    out = {"load_s": load_s, "device": eng.device.summary(), "image_tokens": img.n_tokens if hasattr(img, "n_tokens") else None,
           "cold": runs[0], "warm": runs[1:]}
    eng.close()
    return out


def mem_child(model_dir: str, device: str, layers: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.model_locator import find_model_files
    from runtime.engine.sampling import SamplingOptions
    text, mmproj = find_model_files(Path(model_dir))
    t0 = time.perf_counter()
    eng = Engine(text, mmproj, EngineOptions(n_ctx=4096, device=device, n_gpu_layers=layers if device != "cpu" else -1))
    load_s = time.perf_counter() - t0
    last = None
    for last in eng.ask(None, "Name one part of a motor.", max_tokens=4, use_cache=False,
                        sampling=SamplingOptions(temperature=0.0)):
        pass
    return {"load_s": load_s, "device": eng.device.summary(), "memory_policy": eng.memory_policy.describe(),
            "ttft_s": last.timings.ttft_ms / 1000, "answered": last.completion_tokens > 0}


def memory_run(model_dir: str, device: str, limit_gib: float, layers: int) -> dict:
    """One ``mem_child`` in a fresh memory cgroup of ``limit_gib``: its result and the group's peaks."""
    from memory_group import run_in_group
    r = run_in_group([sys.executable, __file__, "--mem-child", model_dir, device, str(layers)],
                     int(limit_gib * 2 ** 30), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    line = next((ln for ln in r["stdout"].splitlines() if ln.startswith("{")), None)
    res = json.loads(line) if r["rc"] == 0 and line else {"error": r["stderr"][-800:]}
    res.update({k: r[k] for k in ("rc", "peak_gib", "peak_anon_gib", "peak_resident_gib", "limit_hits",
                                  "oom_killed")})
    return res


def _spawn(model_dir: str, device: str, repeat: int, max_tokens: int, photo: str, budget: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", model_dir, device, str(repeat), str(max_tokens), photo,
                        str(budget)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=7200)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("{")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"{device} on {model_dir} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(line)


def _save(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path + ".part")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)


def _med(xs: list[float], fmt: str = "{:.2f}") -> str:
    xs = sorted(xs)
    return fmt.format(statistics.median(xs)) + (f" ({fmt.format(xs[0])}–{fmt.format(xs[-1])})" if len(xs) > 1 else "")


def main() -> int:
    if sys.argv[1:2] == ["--mem-child"]:
        print(json.dumps(mem_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return 0
    if sys.argv[1:2] == ["--child"]:
        model_dir, device, repeat, max_tokens, photo, budget = sys.argv[2:8]
        print(json.dumps(child(model_dir, device, int(repeat), int(max_tokens), photo, int(budget))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", action="append", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--photo", default=str(SAMPLE))
    ap.add_argument("--pixel-budget", type=int, help="photo budget for both devices (default: the model's)")
    ap.add_argument("--memory", type=float, metavar="LIMIT_GIB", help="the memory-limit run instead (needs root, cgroup v1)")
    ap.add_argument("--gpu-layers", type=int, default=999, help="layers on the Vulkan device in --memory (default all)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.memory:
        rows = {}
        for model_dir in a.model_dir:
            for device in ("cpu", "vulkan"):
                print(f"[vulkan_bench] {model_dir} on {device} under {a.memory:g} GiB …", file=sys.stderr, flush=True)
                rows[(model_dir, device)] = memory_run(model_dir, device, a.memory, a.gpu_layers)
        print(f"\none short text question, {a.memory:g} GiB memory cgroup (page cache counted), caches dropped first\n")
        print("| model | device | layers on it | memory policy | answered | load s | peak GiB (cache too) | "
              "peak resident GiB | peak anonymous GiB | limit hits | OOM |")
        print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---|")
        for (model_dir, device), r in rows.items():
            d = r.get("device") or {}
            print(f"| {Path(model_dir).name} | {d.get('device', device)} | {d.get('n_gpu_layers', '—')} | "
                  f"{r.get('memory_policy', '—')} | {'yes' if r.get('answered') else 'NO'} | {r.get('load_s', 0):.1f} | "
                  f"{r['peak_gib']:.2f} | {r['peak_resident_gib']:.2f} | {r['peak_anon_gib']:.2f} | {r['limit_hits']:,} | "
                  f"{'yes' if r['oom_killed'] else 'no'} |")
        _save(a.json, {f"{k[0]}|{k[1]}": v for k, v in rows.items()})
        return 0
    results: dict = {}
    for model_dir in a.model_dir:
        for device in ("cpu", "vulkan"):
            print(f"[vulkan_bench] {model_dir} on {device} …", file=sys.stderr, flush=True)
            results.setdefault(model_dir, {})[device] = _spawn(model_dir, device, a.repeat, a.max_tokens, a.photo,
                                                               a.pixel_budget or 0)
    print(f"\nsample plate {Path(a.photo).name} ({a.pixel_budget or 'the model’s'} pixel budget), greedy, "
          f"{a.max_tokens} tokens; warm: medians of {a.repeat} "
          "(range); cold: the first answer of a fresh process (shader compile included)\n")
    print("| model | device | load s | cold first answer s | vision s | first answer s (TTFT) | decode tok/s | "
          "TTFT vs CPU | decode vs CPU | same answer |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for model_dir, by in results.items():
        cpu = by["cpu"]
        for device, r in by.items():
            w = r["warm"]
            ttft_ratio = statistics.median(x["ttft_s"] for x in w) / statistics.median(x["ttft_s"] for x in cpu["warm"])
            dec_ratio = statistics.median(x["decode_tps"] for x in w) / statistics.median(x["decode_tps"] for x in cpu["warm"])
            name = r["device"]["device"] + (f" ({r['device']['driver']})" if r["device"]["driver"] else "")
            same = all(x["answer"] == cpu["warm"][0]["answer"] for x in w)
            print(f"| {Path(model_dir).parent.name}/{Path(model_dir).name} | {name} | {r['load_s']:.2f} | "
                  f"{r['cold']['ttft_s']:.2f} | {_med([x['vision_s'] for x in w])} | {_med([x['ttft_s'] for x in w])} | "
                  f"{_med([x['decode_tps'] for x in w], '{:.1f}')} | {ttft_ratio:.2f}× | {dec_ratio:.2f}× | "
                  f"{'yes' if same else 'NO'} |")
    _save(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
