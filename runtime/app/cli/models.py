"""The model-file commands: ``glmv synth`` (the synthetic checkpoint), ``glmv convert`` (Hugging
Face checkpoint → GGUF pair), ``glmv models`` (pairs found, checked) and ``glmv doctor`` (this
machine: CPU, llama.cpp variant, RAM, GPUs, models and the quant recommended for it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.app.cli.common import EXIT_INPUT, EXIT_OK, UsageError, device_request
from runtime.engine.model_locator import find_model_files


def cmd_synth(a) -> int:
    from convert.synthetic.synth import make_checkpoint
    out = make_checkpoint(a.out, a.size, seed=a.seed, dialect=a.dialect, progress=not a.quiet)
    print(out)
    return EXIT_OK


def convert_quant(requested: str) -> tuple[str, str | None]:
    """``--quant``: as given, or for ``auto`` the text quant ``glmv doctor`` recommends for this
    machine (and why): on a CPU the best quality that fits its RAM (Q5_K_M, else Q4_K_M)."""
    if requested.lower() != "auto":
        return requested, None
    from runtime.engine import hardware
    from runtime.llama.backends import ensure_loaded, import_llama_cpp
    import_llama_cpp()
    info = ensure_loaded()
    if info.gpus:   # a converted file usually travels: on a GPU machine keep the portable default
        return "Q4_K_M", "a GPU is present: Q4_K_M suits it and any CPU"
    return hardware.quant_advice(hardware.usable_ram(), cpu_features=info.cpu_features)


def cmd_convert(a) -> int:
    import sys
    from convert.converter import convert
    quant, why = convert_quant(a.quant)
    if why:
        print(f"glmv convert: --quant auto → {quant} ({why})", file=sys.stderr)
    r = convert(a.src, a.out, quant=quant, mmproj_quant=a.mmproj_quant, name=a.name,
                progress=not a.quiet, threads=a.threads, force=a.force)
    summary = {"text": str(r.text_path), "mmproj": str(r.mmproj_path), "manifest": str(r.manifest_path),
               "skipped": r.skipped, **r.report}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        for f in (r.text_path, r.mmproj_path):
            note = " (up to date, skipped)" if f.name in r.skipped else ""
            print(f"{f}  {f.stat().st_size / 2**20:.1f} MiB{note}")
        if r.report.get("fallbacks"):
            print(f"note: {len(r.report['fallbacks'])} tensor(s) have rows that are not a multiple of 256 and "
                  f"were stored by llama.cpp in another type: "
                  + ", ".join(f"{n}={t}" for n, t in list(r.report["fallbacks"].items())[:6]))
        if r.report.get("chat_template"):
            print(f"chat template: from {r.report['chat_template']}")
        sd, src = r.report.get("sampling_defaults"), r.report.get("sampling_source")
        if isinstance(sd, dict):
            sd = ", ".join(f"{k.rsplit('.', 1)[-1]} {v:g}" for k, v in sd.items())
        if sd:
            print(f"sampling defaults: {sd}" + (f" ({src})" if src else ""))
        print(f"done in {r.report['seconds']:.1f}s")
    return EXIT_OK


def cmd_models(a) -> int:
    from runtime.engine.model_files import ModelFileError, check_pair, manifest_quant, verify_checksums
    from runtime.common.paths import data_dir, model_dirs
    found = []
    for d in model_dirs(a.model_dir, data_dir(a.data_dir)):
        if not d.is_dir():
            continue
        try:
            text, mmproj = find_model_files(d)
            t, m = check_pair(text, mmproj)
            status = "ok (structure)"
            if a.verify:
                verify_checksums(text, mmproj)
                status = "verified (sha256)"
        except ModelFileError as e:
            if any(d.glob("*.gguf")):
                found.append({"folder": str(d), "error": str(e)})
            continue
        found.append({"folder": str(d), "text": text.name, "mmproj": mmproj.name, "quant": manifest_quant(text) or "?",
                      "bytes": text.stat().st_size + mmproj.stat().st_size, "status": status})
    if a.json:
        print(json.dumps(found, indent=2))
    elif not found:
        print("no models found in: " + ", ".join(str(d) for d in model_dirs(a.model_dir, data_dir(a.data_dir))))
    for f in ([] if a.json else found):
        if "error" in f:
            print(f"{f['folder']}: PROBLEM: {f['error']}")
        else:
            print(f"{f['folder']}: {f['text']} + {f['mmproj']}  [{f['quant']}, {f['bytes'] / 2**30:.2f} GiB, {f['status']}]")
    # a damaged model is bad input (exit 3), so scripts checking a stick with --verify see it
    return EXIT_INPUT if any("error" in f for f in found) else EXIT_OK


def _device_for(a, info, text: Path, mmproj: Path):
    """The device a model would run on here (the engine's own choice, without loading it)."""
    from runtime.engine.device_choice import choose
    from runtime.engine.hardware import usable_ram
    from runtime.engine.model_files import check_pair
    t, _ = check_pair(text, mmproj)
    return choose(device_request(a), info, text_bytes=text.stat().st_size, n_layers=int(t.get("glm4.block_count") or 40),
                  mmproj_bytes=mmproj.stat().st_size, usable_ram=usable_ram())


def cmd_doctor(a) -> int:
    from runtime.engine import hardware
    from runtime.llama.backends import ensure_loaded, import_llama_cpp
    from runtime.common.paths import data_dir, model_dirs
    import_llama_cpp()
    info = ensure_loaded()
    mem = hardware.memory()
    gpus = [d.summary() for d in info.gpus]
    from runtime.llama.memory_policy import choose as choose_memory_policy
    on_gpu = bool(info.gpus)
    from runtime.engine.device_choice import device_budget
    # an integrated GPU's "free memory" is the RAM: its budget, not the driver's figure
    quant, quant_why = hardware.quant_advice(max(device_budget(d, hardware.usable_ram()) for d in info.gpus) if on_gpu
                                             else hardware.usable_ram(), gpu=on_gpu, cpu_features=info.cpu_features)
    models, device = [], None
    for d in model_dirs(getattr(a, "model_dir", None), data_dir(a.data_dir)):
        try:
            text, mmproj = find_model_files(d)
            choice = _device_for(a, info, text, mmproj)
            device = device or choice
            policy, why = choose_memory_policy(hardware.usable_ram(), text.stat().st_size + mmproj.stat().st_size,
                                               gpu_offload=choice.n_gpu_layers > 0, shares_ram=choice.uma)
            models.append({"folder": str(d), "text": text.name, "mmproj": mmproj.name,
                           "memory_policy": policy.describe(), "memory_policy_why": why,
                           "device": choice.summary()})
        except UsageError:
            raise
        except Exception:
            continue
    vulkan = [d.summary() for d in info.devices if d.backend == "Vulkan"]
    report = {"cpu": hardware.cpu_name(), "cores_physical": hardware.physical_cores(),
              "cores_logical": os.cpu_count(), "cpu_variant": info.cpu_variant,
              "cpu_features": [k for k, v in info.cpu_features.items() if v == "1"],
              "ram_total_mib": mem.total // 2**20, "ram_available_mib": mem.available // 2**20,
              "gpus": gpus, "backends": info.registries, "llama_cpp_lib": str(info.lib_dir),
              "vulkan_devices": vulkan, "device": device.summary() if device else None, "notes": info.notes,
              "ram_usable_mib": hardware.usable_ram() // 2**20,
              "models": models, "recommended_quant": quant, "recommended_quant_why": quant_why,
              "data_dir": str(data_dir(a.data_dir))}
    if a.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"CPU          : {report['cpu']} ({report['cores_physical']} physical / {report['cores_logical']} logical cores)")
    print(f"llama.cpp    : CPU variant {report['cpu_variant']}  [{' '.join(report['cpu_features'])}]")
    print(f"RAM          : {report['ram_available_mib'] / 1024:.1f} GiB free of {report['ram_total_mib'] / 1024:.1f} GiB")
    for g in gpus or [None]:
        print("GPU          : " + (f"{g['name']} {g['description']}{' (' + g['driver'] + ')' if g.get('driver') else ''}"
                                    f" — {g['memory_free_mib']} / {g['memory_total_mib']} MiB free" if g else "none"))
    for v in (v for v in vulkan if v.get("software")):
        print(f"Vulkan       : {v['name']} = device {v['vulkan_index']}: {v['description']} ({v['driver']}) — "
              "software, computes on the CPU: used only with --device vulkan")
    for note in info.notes:
        print(f"note         : {note.removeprefix('glmv: ')}")
    if device is not None:
        print(f"device       : {device.label()} — {device.why}")
        for note in device.notes:
            print(f"               {note}")
    for m in models or [None]:
        print("model        : " + (f"{m['text']} + {m['mmproj']} in {m['folder']}" if m else
                                    "none found (convert GLM-4.6V-Flash with `glmv convert`, put the pair in models/)"))
        if m:
            print(f"memory       : {m['memory_policy']} — {m['memory_policy_why']}")
    print(f"recommended  : {quant} — {quant_why}")
    print(f"data folder  : {report['data_dir']}")
    return EXIT_OK
