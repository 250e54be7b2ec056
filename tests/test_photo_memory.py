"""Photo memory (runtime/engine/photo_memory.py): a reopened photo skips the vision tower and the prompt,
answers exactly as before, and a bad, foreign, read-only or full store only costs a recompute."""
from __future__ import annotations

import errno
import multiprocessing
import os
import shutil

import numpy as np
import pytest

from conftest import png_bytes, test_image
from runtime.engine import images
from runtime.engine import photo_memory
from runtime.engine.engine import Engine, EngineOptions
from runtime.engine.photo_memory import PhotoMemory, parse_size
from runtime.engine.sampling import SamplingOptions

SEEDED = SamplingOptions(temperature=1.0, top_p=0.9, seed=42)




@pytest.fixture(scope="module")
def pair_files(converted, tmp_path_factory):
    """A private copy of the tiny pair: a test may touch its mtime (another model identity)."""
    conv = converted("F32", "F32")
    d = tmp_path_factory.mktemp("pm-pair")
    return shutil.copy2(conv.text_path, d), shutil.copy2(conv.mmproj_path, d)


def _engine(pair_files, folder, **kw) -> Engine:
    return Engine(*pair_files, EngineOptions(n_ctx=1024, cache_dir=None, photo_memory_dir=folder, **kw))


def _ask(eng, photo, sampling=None, thinking=False):
    s = eng.session(photo, enable_thinking=thinking)
    answer, _, last = s.ask_all("Serial?", max_tokens=8, sampling=sampling, use_cache=False)
    return answer, last, s


@pytest.fixture(scope="module")
def reference(pair_files, photo):
    """Answers and prompt logits of an engine without the photo memory."""
    eng = _engine(pair_files, None)
    try:
        assert eng.photo_memory is None
        greedy = _ask(eng, photo)[0]
        seeded = _ask(eng, photo, SEEDED)[0]
        logits = eng.session(photo).prompt_logits("Serial?")[-1]
        return greedy, seeded, logits
    finally:
        eng.close()


def _fill(pair_files, folder, photo) -> None:
    eng = _engine(pair_files, folder)
    try:
        _, last, s = _ask(eng, photo)
        assert s.image_encodes == 1 and last.timings.image_encode_ms > 0
    finally:
        eng.close()
    assert sorted(p.name.split("-")[0] for p in folder.glob("*.glmvpm")) == ["embd", "kv"]


def test_reopen_in_another_engine_skips_tower_and_prompt(pair_files, photo, reference, tmp_path):
    folder = tmp_path / "pm"
    _fill(pair_files, folder, photo)
    eng = _engine(pair_files, folder)     # a new model load: what another process or the next day sees
    try:
        answer, last, s = _ask(eng, photo)
        assert s.image_encodes == 0 and last.timings.image_encode_ms == 0
        n_question = s.last_fed_tokens
        assert answer == reference[0]
        assert _ask(eng, photo, SEEDED)[0] == reference[1]
        assert np.array_equal(eng.session(photo).prompt_logits("Serial?")[-1], reference[2])
        # only the question was fed: the image's tokens came back with the stored prefix
        fresh = _engine(pair_files, None)
        try:
            _, _, cold = _ask(fresh, photo)
        finally:
            fresh.close()
        assert n_question < cold.last_fed_tokens - 20
        # thinking changes the prompt's end, not the prefix up to the photo: still a hit
        assert _ask(eng, photo, thinking=True)[2].image_encodes == 0
        assert eng.photo_memory.hits["kv"] >= 3 and not eng.photo_memory.notes
    finally:
        eng.close()


def test_other_photo_budget_or_model_does_not_hit(pair_files, photo, tmp_path):
    folder = tmp_path / "pm"
    _fill(pair_files, folder, photo)
    others = [images.prepare(png_bytes(test_image(seed=1)), name="other.png"),
              images.prepare(png_bytes(test_image()), name="small.png", pixel_budget=12 * images.TOKEN_PIXELS)]
    eng = _engine(pair_files, folder)
    try:
        for other in others:
            assert _ask(eng, other)[2].image_encodes == 1
    finally:
        eng.close()
    st = os.stat(pair_files[0])
    os.utime(pair_files[0], (st.st_atime, st.st_mtime + 10))   # another text file: the prefix is not reused
    try:
        eng = _engine(pair_files, folder)
        try:
            _, _, s = _ask(eng, photo)
            # the projector did not change: its stored encoding still skips the tower
            assert s.image_encodes == 0 and eng.photo_memory.hits == {"kv": 0, "embd": 1}
        finally:
            eng.close()
    finally:
        os.utime(pair_files[0], (st.st_atime, st.st_mtime))


def _damage(kind: str, files: list) -> None:
    original = {p: p.read_bytes() for p in files}
    for p, data in original.items():
        if kind == "damaged":
            p.write_bytes(data[:-40] + bytes(b ^ 0xFF for b in data[-40:]))
        elif kind == "truncated":
            p.write_bytes(data[:len(data) // 2])
        elif kind == "foreign":      # another entry's file under this name
            p.write_bytes(next(d for q, d in original.items() if q != p))
        elif kind == "not-an-entry":
            p.write_bytes(b"PK\x03\x04" + data[4:])


@pytest.mark.parametrize("kind", ["damaged", "truncated", "foreign", "not-an-entry"])
def test_bad_entries_are_recomputed_with_a_note(pair_files, photo, reference, tmp_path, kind, capsys):
    folder = tmp_path / "pm"
    _fill(pair_files, folder, photo)
    _damage(kind, sorted(folder.glob("*.glmvpm")))
    capsys.readouterr()
    eng = _engine(pair_files, folder)
    try:
        answer, _, s = _ask(eng, photo)
        assert answer == reference[0] and s.image_encodes == 1
        notes = eng.photo_memory.notes
        want = {"damaged": "damaged", "truncated": "truncated", "foreign": "foreign", "not-an-entry": "not a photo"}[kind]
        assert notes and all(want in n and "recomputing" in n for n in notes), notes
        err = capsys.readouterr().err.strip().splitlines()
        assert err and all(line.startswith("glmv: photo memory: ") for line in err)
    finally:
        eng.close()
    eng = _engine(pair_files, folder)    # recomputed and stored again: the next engine hits
    try:
        assert _ask(eng, photo)[2].image_encodes == 0
    finally:
        eng.close()


def test_read_only_folder_disables_storing_with_one_note(pair_files, photo, reference, tmp_path, monkeypatch):
    folder = tmp_path / "pm"
    _fill(pair_files, folder, photo)
    empty = tmp_path / "empty"
    empty.mkdir()
    for d in (folder, empty):
        d.chmod(0o555)
    if os.access(empty, os.W_OK):   # root writes anyway: make the write fail as a read-only medium does
        from runtime.common import files

        def refuse(path, data):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        monkeypatch.setattr(files, "atomic_write_bytes", refuse)
    try:
        eng = _engine(pair_files, empty)
        try:
            a1, _, s1 = _ask(eng, photo)
            a2, _, s2 = _ask(eng, photo)
            assert a1 == a2 == reference[0] and s1.image_encodes == s2.image_encodes == 1
            assert len(eng.photo_memory.notes) == 1 and "read-only" in eng.photo_memory.notes[0]
            assert not list(empty.iterdir())
        finally:
            eng.close()
        eng = _engine(pair_files, folder)   # entries already on a read-only stick are still used
        try:
            assert _ask(eng, photo)[2].image_encodes == 0 and not eng.photo_memory.notes
        finally:
            eng.close()
    finally:
        for d in (folder, empty):
            d.chmod(0o755)


def _key(n: int) -> str:
    return PhotoMemory.key("test", n)


def test_lru_by_bytes_and_size_limits(tmp_path):
    notes: list[str] = []
    payload = bytes(range(256)) * 40    # 10 KiB
    one = photo_memory.HEADER.size + len(b'{"n":0}') + len(payload)
    mem = PhotoMemory(tmp_path, 3 * one, note=notes.append)
    for n in range(3):
        assert mem.put("kv", _key(n), {"n": n}, payload)
        os.utime(mem.path("kv", _key(n)), (1e9 + n, 1e9 + n))   # stored in order 0, 1, 2
    assert mem.get("kv", _key(0)).meta == {"n": 0}     # 0 is used again: 1 is now the oldest
    assert mem.put("kv", _key(3), {"n": 3}, payload)
    assert [mem.get("kv", _key(n)) is not None for n in range(4)] == [True, False, True, True]
    assert mem.usage() <= 3 * one and not notes
    # an entry over the bound, or over FAT's 4 GiB per file, is refused with a note
    assert not mem.put("kv", _key(9), {}, payload * 4) and "exceeds the bound" in notes[-1]

    class Huge(bytes):
        def __len__(self):
            return 5 * 2**30
    big = PhotoMemory(tmp_path, 8 * 2**30, note=notes.append)
    assert not big.put("kv", _key(10), {}, Huge()) and "FAT" in notes[-1]
    # an entry vanishing between listing and reading (another process evicted it) is just a miss
    mem.path("kv", _key(3)).unlink()
    n_notes = len(notes)
    assert mem.get("kv", _key(3)) is None and len(notes) == n_notes


def test_full_folder_stops_storing_with_one_note(tmp_path, monkeypatch):
    from types import SimpleNamespace
    notes: list[str] = []
    mem = PhotoMemory(tmp_path / "pm", 2**20, note=notes.append)
    monkeypatch.setattr(photo_memory.shutil, "disk_usage", lambda p: SimpleNamespace(total=2**30, used=2**30, free=4096))
    assert not mem.put("kv", _key(1), {}, b"x" * 10000) and not mem.put("kv", _key(2), {}, b"y")
    assert len(notes) == 1 and "full" in notes[0] and not mem.writable
    assert not list((tmp_path / "pm").iterdir())     # nothing half-written left behind
    monkeypatch.undo()
    assert PhotoMemory(tmp_path / "pm", 2**20, note=notes.append).put("kv", _key(1), {}, b"x")   # control


def test_sizes_from_the_environment():
    assert parse_size("2G") == 2 * 2**30 and parse_size("500M") == 500 * 2**20 and parse_size("0") == 0
    assert parse_size("1.5GiB") == 3 * 2**29
    with pytest.raises(ValueError):
        parse_size("lots")


def _writer(folder: str, tag: int, rounds: int) -> None:
    mem = PhotoMemory(folder, 2**20, note=lambda m: None)
    for i in range(rounds):
        mem.put("embd", _key("shared"), {"tag": tag}, bytes([tag]) * (20000 + 997 * tag + i))


def test_two_processes_sharing_a_folder_never_corrupt_it(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), tag, 40)) for tag in (1, 2)]
    for p in procs:
        p.start()
    reader = PhotoMemory(tmp_path, 2**20, note=lambda m: pytest.fail(f"a reader saw a bad entry: {m}"))
    seen = 0
    while any(p.is_alive() for p in procs):
        hit = reader.get("embd", _key("shared"))
        if hit is not None:
            assert set(hit.payload) == {hit.meta["tag"]}
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reader.get("embd", _key("shared")) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging files left behind"


def _glmv(pair_dir, photo_file, question: str, data, *extra: str) -> dict:
    import json
    import subprocess
    import sys
    from conftest import ROOT
    env = {k: v for k, v in os.environ.items() if k not in ("GLMV_MODEL_DIR", "GLMV_PHOTO_MEMORY")}
    env.update(PYTHONPATH=str(ROOT), GLMV_DATA_DIR=str(data))
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "ask", str(photo_file), question, "--model-dir",
                        str(pair_dir), "--json", "--max-tokens", "6", "--greedy", *extra],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_glmv_ask_remembers_the_photo_across_processes(pair_files, tmp_path):
    """The CLI keeps the memory in its data folder by default; --no-cache turns it off."""
    photo_file = tmp_path / "plate.png"
    photo_file.write_bytes(png_bytes(test_image()))
    pair_dir, data = os.path.dirname(pair_files[0]), tmp_path / "data"
    first = _glmv(pair_dir, photo_file, "Serial?", data)
    assert first["image_encodes"] == 1 and (data / "photo-memory").is_dir()
    again = _glmv(pair_dir, photo_file, "Voltage?", data)      # another question: not an answer-cache hit
    assert not again["cached"] and again["image_encodes"] == 0 and again["image_encode_ms"] == 0
    cold = _glmv(pair_dir, photo_file, "Voltage?", data, "--no-cache")
    assert cold["image_encodes"] == 1 and cold["answer"] == again["answer"]
