"""The Windows bundle (``make bundle-windows``) run under Wine, as ``make test-windows`` does.

The bundle is copied to a path with a space and non-ASCII characters and made read-only; every
program runs in a network namespace with loopback only, with ``%USERPROFILE%`` and the per-user
folders pointing at an empty folder:
- ``glmv-cli.exe --self-test`` (the whole offline check, JSON report);
- ``ask`` and ``read-plate`` on the demo model: the reading equals the Linux build's (same model,
  same greedy decoding under the schema);
- ``serve``, answered through the ``openai`` client from inside the same namespace;
- the CPU-variant probe picks a variant (``doctor --json``);
- ``--check-winpe`` reads the list of system DLLs shipped in the bundle;
- the Vulkan backend (``ggml-vulkan.dll``) through Wine's winevulkan to the host's lavapipe (Wine's
  Vulkan needs its X11 driver, so that test runs under Xvfb): ``ask`` gives the CPU's answer and
  ``read-plate`` its reading within the self-test's tolerance.

Only ``make test-windows`` sets GLMV_WINDOWS_BUNDLE_DIR; without it (``make test``) these skip.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-synthetic.jpg"
ENV = "GLMV_WINDOWS_BUNDLE_DIR"


def _source() -> Path:
    d = os.environ.get(ENV)
    if not d:
        pytest.skip(f"the Windows bundle is tested by `make test-windows` ({ENV} unset)")
    if not (Path(d) / "glmv-cli.exe").is_file():
        pytest.fail(f"{ENV}={d} holds no glmv-cli.exe: `make bundle-windows` failed?")
    return Path(d)


@pytest.fixture(scope="module")
def win(tmp_path_factory):
    """(run, bundle): ``run(args, timeout)`` starts a program of the read-only copy under Wine, offline."""
    from portable_build.windows import wine
    src = _source()
    parent = tmp_path_factory.mktemp("win") / "Field kit – 现场 工具"
    bundle = parent / "glmv-portable-windows"
    shutil.copytree(src, bundle)
    shutil.rmtree(bundle / "data", ignore_errors=True)   # a data folder from running the source bundle
    # a Wine prefix of its own: %USERPROFILE% (C:\\users\\<name>) starts empty. Wine sets the profile
    # variables from its prefix, whatever the environment says, so a fresh prefix is the way
    profile = tmp_path_factory.mktemp("prefix") / "wine"
    env = wine.environment()
    env["WINEPREFIX"] = str(profile)
    subprocess.run(["wineboot", "-i"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600,
                   check=True)
    subprocess.run(["wineserver", "-w"], env=env, timeout=300)
    assert not list(profile.glob("drive_c/users/*/AppData/Local/glmv-portable"))

    def run(args: list[str], timeout: float = 600, script: str | None = None,
            extra_env: dict | None = None) -> subprocess.CompletedProcess:
        # a fresh network namespace, only loopback (brought up, as on an offline laptop), and the
        # bundle mounted read-only (permission bits would not stop root, which these tests run as)
        inner = script or 'exec "$@"'
        setup = 'ip link set lo up && mount --bind "$B" "$B" && mount -o remount,bind,ro "$B" && '
        return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", setup + inner,
                               "sh", wine._wine(), str(bundle / "glmv-cli.exe"), *args],
                              env={**env, "B": str(bundle), **(extra_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              encoding="utf-8", errors="replace", timeout=timeout)
    yield run, bundle, profile


def _json(stdout: str) -> dict:
    start = stdout.find("{")
    assert start >= 0, f"no JSON in the output:\n{stdout[-3000:]}"
    return json.loads(stdout[start:stdout.rfind("}") + 1])


def test_self_test(win):
    run, bundle, profile = win
    r = run(["--self-test"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = _json(r.stdout)
    assert rep["ok"] and rep["frozen"], rep
    # the bundle is read-only: data goes to the per-user folder (%LOCALAPPDATA%, here the empty profile)
    assert "read-only" in (rep.get("data_dir_note") or ""), rep
    assert rep["data_dir"].lower().endswith("\\appdata\\local\\glmv-portable"), rep["data_dir"]
    assert list(profile.glob("drive_c/users/*/AppData/Local/glmv-portable/*")), "nothing in the per-user folder"
    assert not (bundle / "data").exists(), "the read-only bundle was written to"


def test_cpu_probe_picks_a_variant(win):
    run, *_ = win
    r = run(["doctor", "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    doc = _json(r.stdout)
    assert doc["cpu_variant"] and doc["cpu_features"], doc


def _linux_reading() -> dict:
    """The same photo read by the Linux build (the source tree's CLI on the same demo model)."""
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", str(SAMPLE), "--json", "--no-cache",
                        "--model-dir", str(ROOT / "assets" / "models" / "glmv-plates")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-3000:]
    return _json(r.stdout)


def test_ask_and_read_plate_equal_linux(win):
    from portable_build.windows import wine
    run, bundle, _ = win
    photo, demo = wine.winpath(SAMPLE), wine.winpath(bundle / "_internal" / "demo")   # the bundled demo model
    r = run(["ask", photo, "What is the serial number?", "--greedy", "--max-tokens", "24", "--json", "--no-cache",
             "--model-dir", demo])
    assert r.returncode == 0, r.stderr[-3000:]
    assert _json(r.stdout)["answer"].strip()
    r = run(["read-plate", photo, "--json", "--no-cache", "--model-dir", demo])
    assert r.returncode == 0, r.stderr[-3000:]
    windows, linux = _json(r.stdout), _linux_reading()
    assert windows["fields"] == linux["fields"], (windows["fields"], linux["fields"])


CLIENT = r"""
import json, sys, time, urllib.request, base64
from openai import OpenAI
import subprocess
def stop(code):   # ends the server, and with it the pipeline
    subprocess.run(["pkill", "-f", "glmv-cli.exe serve"])
    sys.exit(code)
url = None
for line in sys.stdin:
    if line.startswith("http"):
        url = line.strip(); break
if url is None:
    print(json.dumps({"error": "the server printed no URL"}), flush=True); stop(1)
base, _, token = url.partition("?token=")
head = {"Authorization": f"Bearer {token}"} if token else {}
for _ in range(600):
    st = json.loads(urllib.request.urlopen(urllib.request.Request(base + "api/status", headers=head), timeout=30).read())
    if st["state"] != "loading":
        break
    time.sleep(0.5)
if st["state"] != "ready":
    print(json.dumps({"state": st["state"], "status": st}), flush=True); stop(1)
img = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
c = OpenAI(base_url=base + "v1", api_key=token or "none", timeout=300, max_retries=0)
r = c.chat.completions.create(model="glmv", max_tokens=16, temperature=0, messages=[{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + img}},
    {"type": "text", "text": "What is the serial number?"}]}])
print(json.dumps({"state": st["state"], "answer": r.choices[0].message.content}), flush=True)
import subprocess
subprocess.run(["pkill", "-f", "glmv-cli.exe serve"])   # ends the server, and so the pipeline
"""


def test_serve_answers_the_openai_client(win, tmp_path):
    run, *_ = win
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    # the server and the client share the namespace: its loopback is the only network there
    # (a pipe, not a file: Wine 8 cannot hand a console program a file as its stdout)
    script = '"$@" serve --no-window --port 8765 | "$PY" "$CLIENT" "$PHOTO"'
    r = run([], timeout=600, script=script, extra_env={"PY": sys.executable, "CLIENT": str(client),
                                                         "PHOTO": str(SAMPLE)})
    out = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert out, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out[-1])
    assert res["state"] == "ready" and res["answer"].strip(), res


def test_check_winpe_reads_the_shipped_list(win, tmp_path):
    run, *_ = win
    r = run(["--check-winpe"])
    # Wine's System32 has most of a desktop Windows' DLLs; the point here is that the check runs in
    # the frozen bundle, finds its list and gives a verdict
    assert "system DLLs looked up in" in r.stdout, r.stdout + r.stderr[-2000:]
    assert ("OK       the command line" in r.stdout) or ("MISSING  the command line" in r.stdout)


def test_vulkan_through_winevulkan_on_lavapipe_matches_the_cpu(win):
    """ggml-vulkan.dll imports vulkan-1.dll, which Wine provides (winevulkan, forwarding to the host's
    loader and its lavapipe). Wine's Vulkan needs its X11 driver: without a display vkCreateInstance
    fails (VK_ERROR_INITIALIZATION_FAILED), so this runs under Xvfb."""
    from portable_build.windows import wine
    from support.xdisplay import xvfb_display
    run, bundle, _ = win
    assert (bundle / "_internal" / "llama_cpp" / "lib" / "ggml-vulkan.dll").is_file()
    assert not list(bundle.rglob("vulkan-1.dll")), "the Vulkan loader is the machine's (the GPU driver's)"
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (make system-deps)")
    photo, demo = wine.winpath(SAMPLE), wine.winpath(bundle / "_internal" / "demo")
    with xvfb_display() as display:
        x = {"DISPLAY": display}
        doc = run(["doctor", "--json", "--device", "vulkan", "--model-dir", demo], extra_env=x)
        assert doc.returncode == 0, doc.stderr[-3000:]
        rep = _json(doc.stdout)
        if not any(v.get("software") for v in rep["vulkan_devices"]):
            pytest.skip(f"Wine reaches no Vulkan device here: {rep['notes']}")
        assert rep["device"]["backend"] == "vulkan", rep["device"]
        out = {}
        for device in ("cpu", "vulkan"):
            a = run(["ask", photo, "What is the serial number?", "--greedy", "--max-tokens", "16", "--json",
                     "--no-cache", "--model-dir", demo, "--device", device], extra_env=x)
            assert a.returncode == 0, a.stderr[-3000:]
            assert ("device: Vulkan" if device == "vulkan" else "device: CPU") in a.stderr, a.stderr[-3000:]
            p = run(["read-plate", photo, "--json", "--no-cache", "--model-dir", demo, "--device", device],
                    extra_env=x)
            assert p.returncode == 0, p.stderr[-3000:]
            out[device] = (_json(a.stdout)["answer"], _json(p.stdout)["fields"])
    # the same tolerance as the Linux bundle's lavapipe test (tests/test_bundle.py): near-tied fields
    from runtime.app.self_test import REFERENCE_TOLERANCE
    assert out["vulkan"][0] == out["cpu"][0] and out["cpu"][0].strip()
    cpu, vk = out["cpu"][1], out["vulkan"][1]
    differ = sorted(k for k in {*cpu, *vk} if cpu.get(k) != vk.get(k))
    print(f"read-plate through Vulkan (Wine) differs from the CPU in {differ or 'no field'}")
    assert len(differ) <= REFERENCE_TOLERANCE, (differ, cpu, vk)


def test_folder_with_heic_into_the_inventory_and_xlsx(win, tmp_path):
    """The Windows bundle reads a folder into the inventory (sqlite3), a HEIC photo through pi-heif's
    libheif DLLs, a bad file as an error row, and exports the .xlsx (openpyxl)."""
    import openpyxl
    from portable_build.windows import wine
    run, bundle, _ = win
    folder = tmp_path / "room"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "plate.jpg")
    shutil.copy(ROOT / "tests" / "data" / "plate-synthetic-rot6.heic", folder / "iphone.heic")
    (folder / "notes.txt").write_text("not a photo")
    demo = wine.winpath(bundle / "_internal" / "demo")
    r = run(["read-plate", wine.winpath(folder), "--json", "--model-dir", demo])
    assert r.returncode == 1, r.stderr[-3000:]          # the one error row; the batch went on
    got = {json.loads(x)["photo"]: json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")}
    assert got["iphone.heic"]["state"] == got["plate.jpg"]["state"] == "done", got
    assert got["notes.txt"]["state"] == "error"
    x = run(["inventory", "--xlsx", wine.winpath(tmp_path / "t.xlsx")])
    assert x.returncode == 0, x.stderr[-3000:]
    names = [row[0] for row in openpyxl.load_workbook(tmp_path / "t.xlsx")["Readings"].iter_rows(min_row=2,
                                                                                                  values_only=True)]
    assert sorted(names) == ["iphone.heic", "notes.txt", "plate.jpg"]


def test_a_reading_left_by_a_dead_process_is_seen_on_windows(win, tmp_path):
    """The inventory's claim check on Windows (OpenProcess, not os.kill, which would end the
    process): this process and a live child are alive; the child once killed, and a pid that does
    not exist, are gone — run by the verified Windows CPython the bundle is made from, under Wine."""
    from portable_build.windows import python_win, wine
    py = python_win.windows_python() / "python.exe"
    code = (f"import os, sys, subprocess; sys.path.insert(0, {wine.winpath(ROOT)!r}); "
            "from runtime.tasks.inventory.liveness import pid_alive; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "a = pid_alive(p.pid); p.kill(); p.wait(); "
            "print(pid_alive(os.getpid()), a, pid_alive(p.pid), pid_alive(4000004))")
    env = wine.environment()
    env["WINEPREFIX"] = str(win[2])
    r = subprocess.run([wine._wine(), str(py), "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.split() == ["True", "True", "False", "False"], (r.stdout, r.stderr[-2000:])
