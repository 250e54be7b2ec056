"""A CUDA toolkit the CUDA build can use, when the installed one lacks cuBLAS.

    python -m portable_build.cuda_toolkit [--cuda-home /usr/local/cuda] [--out build/cuda-toolkit]

ggml's CUDA backend links cuBLAS, and some toolkits come without it (the one on the project's build
machines is NVIDIA's pip wheels for nvcc, cudart, crt and nvvm, without ``nvidia-cublas``). This
assembles, under ``--out``, a toolkit that is the installed one plus cuBLAS from the matching
``nvidia-cublas`` wheel (same CUDA major.minor as nvcc, fetched with pip at build time — never at run
time): ``bin/`` is copied (nvcc finds its headers relative to its own real path), the rest is linked,
and ``include/`` and ``lib/`` get cuBLAS's headers and libraries. Nothing outside ``--out`` is changed.
It prints the folder to use as ``CUDA_HOME``::

    CUDA_HOME=$(python -m portable_build.cuda_toolkit) python -m portable_build.bundle --cuda
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from portable_build.llama_build import cuda_preflight

ROOT = Path(__file__).resolve().parent.parent


def _log(msg: str) -> None:
    print(f"[cuda-toolkit] {msg}", file=sys.stderr, flush=True)


def nvcc_version(home: Path) -> tuple[int, int]:
    out = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        raise SystemExit(f"cannot read the CUDA version from `nvcc --version`:\n{out}")
    return int(m.group(1)), int(m.group(2))


def fetch_cublas(major: int, minor: int, dest: Path) -> Path:
    """The nvidia-cublas wheel for this CUDA major.minor (pip, build time only)."""
    have = sorted(dest.glob(f"nvidia_cublas-{major}.{minor}.*.whl"))
    if have:
        return have[-1]
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"nvidia-cublas>={major}.{minor},<{major}.{minor + 1}"
    _log(f"downloading {spec} (build time only)")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec],
                   check=True, stdout=sys.stderr)
    found = sorted(dest.glob(f"nvidia_cublas-{major}.{minor}.*.whl"))
    if not found:
        raise SystemExit(f"pip did not fetch a wheel for {spec}")
    return found[-1]


def _link_tree_entries(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        (dst / p.name).symlink_to(p.resolve())


def assemble(home: Path, out: Path) -> Path:
    if not cuda_preflight({"CUDA_HOME": str(home), "PATH": ""}):
        return home                                   # complete already: use it as it is
    if not (home / "bin" / "nvcc").is_file():
        raise SystemExit(f"no nvcc under {home}/bin: set --cuda-home to a CUDA toolkit")
    major, minor = nvcc_version(home)
    stamp = out / ".cublas-from"
    wheel = fetch_cublas(major, minor, out.parent / "cuda-wheels")
    if stamp.is_file() and stamp.read_text() == f"{home.resolve()}\n{wheel.name}\n":
        return out
    part = Path(tempfile.mkdtemp(prefix=out.name + ".part-", dir=out.parent))
    shutil.copytree(home / "bin", part / "bin", symlinks=True)
    for p in home.iterdir():
        if p.name not in ("bin", "include", "lib", "lib64", "targets"):
            (part / p.name).symlink_to(p.resolve())
    _link_tree_entries((home / "include").resolve(), part / "include")
    lib = (home / "lib64") if (home / "lib64").exists() else home / "lib"
    _link_tree_entries(lib.resolve(), part / "lib")
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            m = re.match(r"nvidia/cu\d+/(include|lib)/(.+)$", info.filename) or \
                re.match(r"nvidia/cublas/(include|lib)/(.+)$", info.filename)
            if not m or info.is_dir():
                continue
            target = part / m.group(1) / m.group(2)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            with z.open(info) as fsrc, open(target, "wb") as fdst:
                shutil.copyfileobj(fsrc, fdst)
    # the wheel ships only versioned names (libcublas.so.13); the linker wants libcublas.so
    for so in list((part / "lib").glob("libcublas*.so.*")):
        plain = so.with_name(so.name.split(".so")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(so.name)
    (part / "lib64").symlink_to("lib")
    (part / "targets" / "x86_64-linux").mkdir(parents=True)
    (part / "targets" / "x86_64-linux" / "include").symlink_to("../../include")
    (part / "targets" / "x86_64-linux" / "lib").symlink_to("../../lib")
    (part / ".cublas-from").write_text(f"{home.resolve()}\n{wheel.name}\n")
    if missing := cuda_preflight({"CUDA_HOME": str(part), "PATH": ""}):
        raise SystemExit("the assembled toolkit is still incomplete: " + "; ".join(missing))
    if out.exists():
        shutil.rmtree(out)
    os.replace(part, out)
    _log(f"{out}: {home} + {wheel.name}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m portable_build.cuda_toolkit", description=__doc__.split("\n")[0])
    ap.add_argument("--cuda-home", default=os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda")
    ap.add_argument("--out", default=str(ROOT / "build" / "cuda-toolkit"))
    a = ap.parse_args(argv)
    if sys.platform != "linux":   # symlinks, lib*.so and targets/x86_64-linux: the pip-wheel toolkits of Linux
        raise SystemExit("portable_build.cuda_toolkit is for Linux; on Windows install the CUDA toolkit with its "
                         "cuBLAS component and set CUDA_PATH")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(assemble(Path(a.cuda_home), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
