"""The frozen PyInstaller bundle (``make bundle``), as a user gets it on a USB stick.

It is copied to a path with spaces and non-ASCII characters, then ``glmv --self-test`` runs:
- with no network (a fresh network namespace) and an empty HOME, a minimal environment and the
  bundle folder mounted read-only, under strace: every connection attempt must be to loopback and
  every file written must be in the data folder;
- under ``qemu-x86_64 -cpu Nehalem`` (no AVX): a baseline CPU variant must be chosen and work;
and the launcher opens its window under Xvfb, and falls back to the URL with no display at all.

``make test`` builds the bundle first and sets GLMV_BUNDLE_DIR; run alone, these tests skip when
no bundle was built.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.xdisplay import xvfb_display

ROOT = Path(__file__).resolve().parent.parent
EXE = "glmv.exe" if os.name == "nt" else "glmv"
BASELINE_VARIANTS = ("x64", "sse42")   # what an SSE4.2, no-AVX CPU (Nehalem) may run
WRITE_SYSCALLS = ("openat", "open", "creat", "mkdir", "mkdirat", "rename", "renameat", "renameat2",
                  "unlink", "unlinkat", "rmdir", "truncate", "symlink", "symlinkat", "link", "linkat")
ROOT_ONLY = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                               reason="needs root (network namespace, read-only bind mount)")


def _bundle_source() -> Path:
    env = os.environ.get("GLMV_BUNDLE_DIR")
    d = Path(env) if env else ROOT / "dist" / "glmv-portable"
    if not (d / EXE).is_file():
        if env:  # make test promised a bundle: its absence is a failure, not a skip
            pytest.fail(f"GLMV_BUNDLE_DIR={env} holds no {EXE}: `make bundle` failed?")
        pytest.skip("no bundle built (run `make bundle`, or `make test` which builds it)")
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A copy of the bundle under a path with a space and Chinese characters."""
    src = _bundle_source()
    parent = Path("/tmp") / f"测试 bundle {os.getpid()}"
    shutil.rmtree(parent, ignore_errors=True)
    parent.mkdir()
    dst = parent / "glmv-portable"
    shutil.copytree(src, dst, symlinks=True)
    yield dst
    shutil.rmtree(parent, ignore_errors=True)


def _report(stdout: str) -> dict:
    start = stdout.find("{")
    assert start >= 0, f"no JSON report in the output:\n{stdout[-3000:]}"
    return json.loads(stdout[start:])


def test_layout(bundle):
    for rel in (EXE, "_internal", "models/README.txt", "start.sh", "start.bat", "README-offline.txt",
                "_internal/BUILD-INFO.json", "_internal/demo/manifest.json", "_internal/assets/ui/index.html",
                "_internal/assets/fonts/fonts.conf"):
        assert (bundle / rel).exists(), rel
    assert os.access(bundle / "start.sh", os.X_OK)
    assert not (bundle / "data").exists(), "data/ is created on first run, not shipped"
    libs = {p.name for p in (bundle / "_internal" / "llama_cpp" / "lib").iterdir()}
    assert {"libllama.so", "libggml.so.0", "libmtmd.so"} <= libs, sorted(libs)
    assert {f"libggml-cpu-{v}.so" for v in BASELINE_VARIANTS + ("haswell",)} <= libs, sorted(libs)
    readme = (bundle / "README-offline.txt").read_text(encoding="utf-8")
    assert "glibc" in readme and "离线" in readme and "glmv-cli.exe" in readme
    bat = (bundle / "start.bat").read_bytes()   # cmd.exe misreads labels and goto in LF-only files
    assert bat.count(b"\n") == bat.count(b"\r\n") > 3


def test_trimmed(bundle):
    from portable_build.bundle_policy import dropped
    kept = [str(p.relative_to(bundle / "_internal")) for p in (bundle / "_internal").rglob("*") if p.is_file()]
    offenders = [k for k in kept if dropped(k)]
    assert not offenders, offenders[:20]
    assert not any("torch" in k.split("/")[0] or k.startswith("transformers") for k in kept)


def _strace_events(log: Path) -> tuple[list[str], list[str]]:
    """(connect targets, paths written successfully) from an `strace -f` log."""
    connects, writes = [], []
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r"\bconnect\(\d+, \{sa_family=(\w+)(.*?)\}, \d+\)", line)
        if m:
            connects.append(m.group(1) + m.group(2))
            continue
        m = re.search(r"\b(" + "|".join(WRITE_SYSCALLS) + r")\((.*)\)\s+=\s+(-?\d+)", line)
        if not m or int(m.group(3)) < 0:
            continue
        call, args = m.group(1), m.group(2)
        if call in ("openat", "open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
            continue
        writes.extend(re.findall(r'"((?:[^"\\]|\\.)*)"', args))
    return connects, writes


def _loopback(target: str) -> bool:
    if target.startswith("AF_UNIX"):
        return True  # local sockets (name service, X): not the network
    return bool(re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|::ffff:127\.', target))


@ROOT_ONLY
@pytest.mark.skipif(not shutil.which("strace") or not shutil.which("unshare"),
                    reason="strace / unshare missing (make system-deps installs strace)")
def test_self_test_offline_read_only_empty_home(bundle, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "strace.log"
    before = sorted((str(p), p.stat().st_mtime_ns) for p in bundle.rglob("*"))
    # a fresh network namespace has only a loopback device, and it is down: bring it up, as a
    # laptop with no network has it
    script = ('ip link set lo up && mount --bind "$B" "$B" && mount -o remount,bind,ro "$B" && '
              'exec strace -f -qq -o "$LOG" -e trace=connect,' + ",".join(WRITE_SYSCALLS) +
              ' env -i HOME="$H" PATH=/usr/bin:/bin LANG=C.UTF-8 "$B/glmv" --self-test')
    r = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script],
                       env={"B": str(bundle), "H": str(home), "LOG": str(log), "PATH": os.environ["PATH"]},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    rep = _report(r.stdout)
    assert rep["ok"], rep
    assert rep["frozen"] and rep["backend"]["device"] == "CPU"
    data = home / ".local" / "share" / "glmv-portable"
    assert Path(rep["data_dir"]) == data, "read-only medium: data must go to the per-user folder"
    assert "read-only" in rep["data_dir_note"] and str(data) in rep["data_dir_note"]
    assert "readings.jsonl" in rep["files_written"] and (data / "readings.jsonl").is_file()

    connects, writes = _strace_events(log)
    foreign = [c for c in connects if not _loopback(c)]
    assert not foreign, f"connection attempts beyond loopback: {foreign}"
    assert any("127.0.0.1" in c for c in connects), "the self-test's server check should connect to loopback"
    # creating the data folder creates its parents (~/.local/share) too: that is not writing elsewhere
    outside = sorted({w for w in writes if not w.startswith(str(data)) and not str(data).startswith(w + "/")
                      and w not in ("/dev/null", "/dev/tty")})
    assert not outside, f"files written outside the data folder: {outside}"
    after = sorted((str(p), p.stat().st_mtime_ns) for p in bundle.rglob("*"))
    assert before == after, "the bundle folder changed"


@pytest.mark.skipif(not shutil.which("qemu-x86_64") or not shutil.which("unshare"),
                    reason="qemu-user / unshare missing (make system-deps installs qemu-user)")
def test_self_test_on_an_old_cpu_without_avx(bundle, tmp_path):
    """User-mode emulation of a Nehalem (SSE4.2, no AVX): any AVX instruction would be SIGILL.

    PyInstaller's bootloader runs the program in a second process, and the CPU probe is a third:
    ``qemu-x86_64 glmv`` would emulate only the first. So the executable gets an extension that
    binfmt_misc, in a private user namespace (Linux >= 6.7), hands to qemu: every process of the
    bundle then runs emulated, and QEMU_CPU picks the CPU model."""
    copy = tmp_path / "glmv-portable"
    shutil.copytree(bundle, copy, symlinks=True, copy_function=os.link)
    exe = copy / (EXE + ".glmvqemu")
    (copy / EXE).rename(exe)
    qemu = shutil.which("qemu-x86_64")
    script = ('mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null && '
              f'echo ":glmvq:E::glmvqemu::{qemu}:F" > /proc/sys/fs/binfmt_misc/register || exit 97; '
              'exec env -i QEMU_CPU=Nehalem PATH=/usr/bin:/bin HOME="$H" GLMV_DATA_DIR="$H/data" LANG=C.UTF-8 '
              '"$X" --self-test')
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                       env={"H": str(tmp_path), "X": str(exe), "PATH": os.environ["PATH"]},
                       capture_output=True, text=True, timeout=900)
    if r.returncode == 97:
        pytest.skip("this kernel has no binfmt_misc in user namespaces (Linux >= 6.7)")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    rep = _report(r.stdout)
    assert rep["ok"], rep
    assert rep["backend"]["cpu_variant"] in BASELINE_VARIANTS, rep["backend"]
    assert not any(f.startswith("AVX") for f in rep["backend"]["cpu_features"]), rep["backend"]
    # the emulated CPU was the one asked for: only baseline variants were even candidates for the probe
    probed = json.loads((tmp_path / "data" / "cpu-variants.json").read_text())
    assert probed and all(any(f"cpu-{v}." in k for v in BASELINE_VARIANTS) for k in probed), probed


def test_no_display_falls_back_to_the_url_within_a_second(bundle, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GLMV_DATA_DIR": str(tmp_path / "data"),
           "LANG": "C.UTF-8"}
    t0 = time.monotonic()
    p = subprocess.Popen([str(bundle / EXE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        line = p.stderr.readline()
        elapsed = time.monotonic() - t0
        assert url.startswith("http://127.0.0.1:"), (url, line)
        assert "no display here" in line and url in line, line
        assert elapsed < 1.0, f"the fallback took {elapsed:.2f}s"
        health = json.loads(urllib.request.urlopen(url + "health", timeout=30).read())
        assert health["status"] == "ok"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0


@pytest.mark.skipif(not shutil.which("Xvfb"), reason="Xvfb is not installed (make system-deps)")
def test_window_under_xvfb_then_model_ready(bundle, tmp_path):
    from PIL import ImageGrab
    with xvfb_display() as disp:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISPLAY": disp, "LANG": "C.UTF-8",
               "GLMV_DATA_DIR": str(tmp_path / "data"), "GLMV_MODEL_DIR": str(bundle / "_internal" / "demo")}
        t0 = time.monotonic()
        p = subprocess.Popen([str(bundle / EXE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = p.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            shown = ready = None
            colours = 0
            while time.monotonic() - t0 < 120 and (shown is None or ready is None):
                assert p.poll() is None, p.stderr.read()
                if ready is None:
                    st = json.loads(urllib.request.urlopen(url + "api/status", timeout=30).read())
                    if st["state"] == "ready":
                        ready = time.monotonic() - t0
                    assert st["state"] in ("loading", "ready"), st
                if shown is None:
                    shot = ImageGrab.grab(xdisplay=disp)
                    colours = len(shot.convert("RGB").getcolors(1 << 20) or [])
                    if colours > 200:
                        shown = time.monotonic() - t0
                        (ROOT / "build").mkdir(exist_ok=True)
                        shot.save(ROOT / "build" / "bundle-window.png")
                time.sleep(0.3)  # grabbing the screen costs CPU the window needs to start
            if shown is None:
                p.send_signal(signal.SIGTERM)
                pytest.fail(f"the window stayed blank ({colours} colours); glmv said:\n{p.communicate(timeout=30)[1][-3000:]}")
            assert ready is not None, "the demo model did not get ready"
            (ROOT / "build" / "bundle-start.json").write_text(json.dumps(
                {"window_shown_s": round(shown, 2), "model_ready_s": round(ready, 2)}))
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=30) == 0


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is needed to build the stand-in GPU backend")
def test_gpu_backend_without_driver_is_skipped_with_a_note(bundle, tmp_path):
    """A CUDA bundle on a machine with no NVIDIA driver: the backend library links libcuda.so.1,
    which is absent. It must be skipped with a one-line note, and the CPU must do the work."""
    copy = tmp_path / "glmv-portable"
    shutil.copytree(bundle, copy, symlinks=True, copy_function=os.link)
    stub = tmp_path / "stub"
    stub.mkdir()
    (tmp_path / "x.c").write_text("void glmv_stand_in(void) {}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", stub / "libcuda.so.1", tmp_path / "x.c",
                    "-Wl,-soname,libcuda.so.1"], check=True)
    lib = copy / "_internal" / "llama_cpp" / "lib" / "libggml-cuda.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, tmp_path / "x.c", "-Wl,--no-as-needed", f"-L{stub}",
                    "-l:libcuda.so.1"], check=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GLMV_DATA_DIR": str(tmp_path / "data"), "LANG": "C.UTF-8"}
    r = subprocess.run([str(copy / EXE), "--self-test"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = _report(r.stdout)
    assert rep["ok"] and rep["backend"]["device"] == "CPU", rep
    notes = [ln for ln in r.stderr.splitlines() if "CUDA backend present but not usable here" in ln]
    assert len(notes) == 1 and "libcuda.so.1" in notes[0], r.stderr[-2000:]
    assert rep["backend"]["notes"] == notes


@ROOT_ONLY
def test_read_only_stick_status_says_where_data_goes(bundle, tmp_path):
    """`glmv serve` from a read-only bundle: /api/status carries the note the status bar shows."""
    home = tmp_path / "home"
    home.mkdir()
    script = ('mount --bind "$B" "$B" && mount -o remount,bind,ro "$B" && '
              'exec env -i HOME="$H" PATH=/usr/bin:/bin LANG=C.UTF-8 "$B/glmv" serve --no-window')
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                         env={"B": str(bundle), "H": str(home), "PATH": os.environ["PATH"]},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (url, p.stderr.read() if p.poll() is not None else "")
        st = json.loads(urllib.request.urlopen(url + "api/status", timeout=30).read())
        data = home / ".local" / "share" / "glmv-portable"
        assert st["data_dir"] == str(data)
        assert st["data_dir_note"] and "read-only" in st["data_dir_note"], st
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert 'id="st-data"' in page
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


@ROOT_ONLY
@pytest.mark.skipif(not shutil.which("Xvfb"), reason="Xvfb is not installed (make system-deps)")
def test_window_on_a_host_without_fontconfig_uses_the_bundled_fonts(bundle, tmp_path):
    """A rescue system may have no fontconfig setup, where QtWebEngine hangs: /etc/fonts and the
    system fonts are hidden (a private mount namespace), and the Chinese page must still paint,
    from the bundle's fonts.conf and fonts."""
    from PIL import ImageGrab
    empty = tmp_path / "empty"
    empty.mkdir()
    script = ('for d in /etc/fonts /usr/share/fonts /usr/local/share/fonts; do [ -d "$d" ] && mount --bind "$E" "$d"; done; '
              'exec env -i HOME="$H" PATH=/usr/bin:/bin LANG=zh_CN.UTF-8 LANGUAGE=zh_CN DISPLAY="$DISP" '
              'GLMV_DATA_DIR="$H/data" "$B/glmv"')
    with xvfb_display() as disp:
        p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                             env={"B": str(bundle), "H": str(tmp_path), "E": str(empty), "DISP": disp,
                                  "PATH": os.environ["PATH"]},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = p.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            colours, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < 90 and colours <= 200:
                assert p.poll() is None
                time.sleep(0.5)
                shot = ImageGrab.grab(xdisplay=disp)
                colours = len(shot.convert("RGB").getcolors(1 << 20) or [])
            shot.save(ROOT / "build" / "bundle-window-nofontconfig.png")
            if colours <= 200:
                p.send_signal(signal.SIGTERM)
                pytest.fail(f"the window stayed blank ({colours} colours):\n{p.communicate(timeout=30)[1][-3000:]}")
            # the window child is the one that reads fonts: it must have been given the bundled config
            kids = [k for k in subprocess.run(["pgrep", "-f", "--", "--glmv-window"], capture_output=True,
                                              text=True).stdout.split()
                    if str(bundle).encode() in Path(f"/proc/{k}/cmdline").read_bytes()]
            envs = [Path(f"/proc/{k}/environ").read_bytes().split(b"\0") for k in kids]
            assert any(f"FONTCONFIG_FILE={bundle}/_internal/assets/fonts/fonts.conf".encode() in e for e in envs), kids
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)


def _frozen(bundle: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GLMV_DATA_DIR": str(tmp_path / "data"), "LANG": "C.UTF-8"}
    return subprocess.run([str(bundle / EXE), *args], env=env, capture_output=True, text=True, timeout=600)


def test_ask_and_read_plate_through_vulkan_on_lavapipe_match_the_cpu(bundle, tmp_path):
    """The frozen bundle reads through its Vulkan backend on Mesa's software device (asked for:
    auto never picks it), as a user runs it (f16 arithmetic), and gives the demo model's answer as
    on the CPU; its nameplate reading may differ in as many fields as the self-test allows between
    CPU variants (the demo model's near-tied guesses: measured, the serial number's and the power
    factor's digits, the same two the Nehalem variant tips)."""
    from runtime.app.self_test import REFERENCE_TOLERANCE
    libs = {p.name for p in (bundle / "_internal" / "llama_cpp" / "lib").iterdir()}
    assert "libggml-vulkan.so" in libs, sorted(libs)
    assert not any(n.startswith("libvulkan.so") for n in (p.name for p in (bundle / "_internal").rglob("*"))), \
        "the Vulkan loader must be the machine's own"
    doc = _frozen(bundle, tmp_path, "doctor", "--json", "--device", "vulkan")
    assert doc.returncode == 0, doc.stderr[-2000:]
    rep = json.loads(doc.stdout)
    if not any(v.get("software") for v in rep["vulkan_devices"]):
        pytest.skip(f"no software Vulkan device on this machine (mesa-vulkan-drivers): {rep['notes']}")
    sample = ROOT / "assets" / "samples" / "plate-en-metal.jpg"
    out = {}
    for device in ("cpu", "vulkan"):
        a = _frozen(bundle, tmp_path, "ask", str(sample), "What is the serial number?", "--greedy", "--max-tokens",
                    "16", "--no-cache", "--json", "--device", device)
        assert a.returncode == 0, a.stderr[-2000:]
        want = "device: CPU" if device == "cpu" else "device: Vulkan llvmpipe"
        assert want in a.stderr, a.stderr[-2000:]
        p = _frozen(bundle, tmp_path, "read-plate", str(sample), "--json", "--no-cache", "--device", device)
        assert p.returncode == 0, p.stderr[-2000:]
        out[device] = (json.loads(a.stdout)["answer"], json.loads(p.stdout)["fields"])
    assert out["vulkan"][0] == out["cpu"][0] and out["cpu"][0].strip()
    cpu, vk = out["cpu"][1], out["vulkan"][1]
    differ = sorted(k for k in {*cpu, *vk} if cpu.get(k) != vk.get(k))
    print(f"read-plate through Vulkan differs from the CPU in {differ or 'no field'}")
    assert len(differ) <= REFERENCE_TOLERANCE, (differ, cpu, vk)


def test_frozen_bundle_reads_heic_with_its_libraries_and_licences(bundle, tmp_path):
    """HEIC in the frozen bundle: pi-heif's extension and the libheif/libde265 it links are collected
    (a missing one would make HEIC "cannot read: pi-heif is missing"), read-plate reads the HEIC as the
    JPEG it was made from (at most 2 of the demo model's near-tied fields differ, as in
    tests/test_heic.py), a truncated HEIC is a one-line error, and the LGPL texts ship."""
    internal = {p.name for p in (bundle / "_internal").rglob("*")}
    assert any(n.startswith("_pi_heif") for n in internal), "pi-heif's extension module is not in the bundle"
    for lib in ("libheif", "libde265"):
        assert any(n.startswith(lib) for n in internal), f"{lib} is not in the bundle"
    for f in ("THIRD-PARTY-NOTICES.txt", "LGPL-3.txt", "GPL-3.txt", "pi-heif-LICENSES_bundled.txt"):
        assert (bundle / "licenses" / f).is_file(), f
    heic = ROOT / "tests" / "data" / "plate-synthetic-rot6.heic"
    out = {}
    for photo in (heic, ROOT / "assets" / "samples" / "plate-synthetic.jpg"):
        r = _frozen(bundle, tmp_path, "read-plate", str(photo), "--json", "--no-cache")
        assert r.returncode == 0, r.stderr[-2000:]
        out[photo.suffix] = json.loads(r.stdout)["fields"]
    a, b = out[".heic"], out[".jpg"]
    differ = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
    print(f"frozen read-plate on the HEIC differs from the JPEG in {differ or 'no field'}")
    assert len(differ) <= 2, (differ, a, b)
    cut = tmp_path / "cut.heic"
    cut.write_bytes(heic.read_bytes()[:20000])
    r = _frozen(bundle, tmp_path, "read-plate", str(cut), "--json", "--no-cache")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cut.heic" in r.stderr and ("damaged" in r.stderr or "truncated" in r.stderr), r.stderr[-2000:]


def test_frozen_bundle_reads_a_folder_into_the_inventory_and_exports_xlsx(bundle, tmp_path):
    """The frozen CLI over a folder: the inventory (sqlite3), a bad file as an error row, the
    readings equal to the source install's, and the .xlsx export (openpyxl) as the source writes it."""
    import openpyxl
    from convert.synthetic.plates import make_plate
    folder = tmp_path / "room"
    folder.mkdir()
    for i in range(2):
        make_plate(1300 + i)[0].save(folder / f"p{i}.jpg", quality=90)
    (folder / "notes.txt").write_text("not a photo")
    r = _frozen(bundle, tmp_path, "read-plate", str(folder), "--json")
    assert r.returncode == 1, r.stderr           # one error row: the batch went on
    got = {json.loads(x)["photo"]: json.loads(x) for x in r.stdout.splitlines()}
    assert got["notes.txt"]["state"] == "error" and got["p0.jpg"]["state"] == got["p1.jpg"]["state"] == "done"
    src = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", str(folder), "--json", "--data-dir",
                          str(tmp_path / "src-data")], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    want = {json.loads(x)["photo"]: json.loads(x) for x in src.stdout.splitlines()}
    assert all(got[p]["fields"] == want[p]["fields"] for p in ("p0.jpg", "p1.jpg"))
    x = _frozen(bundle, tmp_path, "inventory", "--xlsx", str(tmp_path / "t.xlsx"))
    assert x.returncode == 0, x.stderr
    wb = openpyxl.load_workbook(tmp_path / "t.xlsx")
    assert wb.sheetnames == ["Readings", "Corrections"]
    names = [row[0] for row in wb["Readings"].iter_rows(min_row=2, values_only=True)]
    assert sorted(names) == ["notes.txt", "p0.jpg", "p1.jpg"]
