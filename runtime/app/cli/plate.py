"""``glmv read-plate`` (nameplate fields from a batch of photos, each reading printed as it is
made and logged) and ``glmv demo`` (the built-in demo model on the sample plate, beside its truth).
Both run the one read-plate use case, runtime/tasks/read_plate.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.app.cli.common import EXIT_FAIL, EXIT_OK, _engine, _err, _sampling, locate_or_demo, pixel_budget
from runtime.app.cli.photos import check_photos
from runtime.tasks import plate


def cmd_read_plate(a) -> int:
    import signal
    from runtime.tasks.read_plate import plate_sampling, read_plate_photo
    from runtime.engine import images
    from runtime.engine.model_files import manifest_quant
    from runtime.common.paths import data_dir
    text, mmproj = locate_or_demo(a)
    budget = pixel_budget(a, text)
    # a bad photo is refused before the model loads (minutes on a laptop); each is decoded once, when read
    check_photos(a.photos, budget)
    eng = _engine(a, text, mmproj)
    log = data_dir(a.data_dir) / "readings.jsonl"
    quant = manifest_quant(text)
    many = len(a.photos) > 1
    cancel = _Cancel()
    old = signal.signal(signal.SIGINT, cancel.on_sigint)
    try:
        sampling = plate_sampling(_sampling(a, eng))
        for k, p in enumerate(a.photos):
            path = Path(p)
            shown = _PlateDisplay(a, str(path))
            try:
                r, last = read_plate_photo(eng, path, images.load(path, pixel_budget=budget), sampling=sampling,
                                           max_tokens=a.max_tokens, use_cache=not a.no_cache, log=log, quant=quant,
                                           on_event=shown.event, cancelled=cancel)
            finally:
                shown.close()
            # each reading is printed as soon as it is made: an interrupted batch keeps what was read
            if a.csv:
                sys.stdout.write(plate.to_csv([(str(path), r)], header=k == 0))
            elif a.json:
                out = r.as_json() | ({"incomplete": True} if last.finish_reason == "cancelled" else {})
                print(json.dumps({"photo": str(path), **out} if many else out, ensure_ascii=False))
            elif not a.stream:
                if many:
                    print(f"== {path}")
                print(plate.to_table(r))
            sys.stdout.flush()
            if cancel.flag:
                _err("stopped: the reading above is incomplete and was not logged"
                     + (f"; {len(a.photos) - k - 1} photo(s) not read" if k + 1 < len(a.photos) else ""))
                return EXIT_FAIL
    finally:
        signal.signal(signal.SIGINT, old)
        eng.close()
    return EXIT_OK


class _Cancel:
    """Ctrl-C stops the reading at the next token (what was read is kept, marked incomplete); a
    second one exits at once."""

    def __init__(self):
        self.flag = False

    def __call__(self) -> bool:
        return self.flag

    def on_sigint(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True


class _PlateDisplay:
    """What the reading shows while it runs: on stderr the progress through the photo and prompt,
    then a bar of the fields read with the speed and the time left (see --progress); with
    --stream, every event as one JSON line on stdout."""

    def __init__(self, a, photo: str):
        from runtime.engine.progress import TerminalProgress
        self.a, self.photo = a, photo
        mode = a.show_progress
        quiet = (a.json or a.csv or a.stream) and mode == "auto" and not sys.stderr.isatty()
        self.bar = TerminalProgress("off" if quiet else mode)

    def event(self, ev) -> None:
        from runtime.tasks.read_plate import stream_event
        if self.a.stream:
            line = stream_event(ev)
            if line is not None:
                print(json.dumps({"photo": self.photo, **line}, ensure_ascii=False), flush=True)
        if self.bar.mode == "off":
            return
        if ev.kind == "progress":
            self.bar.show(ev)
        elif ev.kind == "decode":
            self.bar.show_fields(ev.fields_done, ev.fields_total, ev.decode_tps, ev.eta_s)

    def close(self) -> None:
        self.bar.close()


def cmd_demo(a) -> int:
    """The built-in demo model reads the sample plate; each field is shown beside what is printed."""
    from runtime.tasks.read_plate import plate_sampling, read_plate_photo
    from runtime.engine import images
    from runtime.engine.model_locator import demo_manifest, demo_model_files
    from runtime.tasks.demo_check import compare, sample_plate
    from runtime.common.paths import data_dir
    from runtime.engine.sampling import SamplingOptions
    text, mmproj = demo_model_files()
    photo, truth = sample_plate()
    acc = demo_manifest(text.parent).get("accuracy") or {}
    print("glmv demo: the built-in demo model (glmv-plates, 2.8 M parameters, GLM-4.6V architecture) was\n"
          "trained here for 73 minutes on 2 CPU cores to read the project's SYNTHETIC nameplates.\n"
          "It runs the real pipeline (GGUF → llama.cpp + mtmd → JSON grammar), but it has learned the\n"
          "answer format, not yet to read: on held-out plates it gets "
          f"{100 * acc.get('field_accuracy', 0):.0f} % of fields right "
          f"(model card: {text.parent / 'README.md'}).\n"
          "For real photos, convert GLM-4.6V-Flash: `glmv convert <hf-folder> --out models/`.\n", file=sys.stderr)
    print(f"model: {text.name} + {mmproj.name}\nphoto: {photo}\n", file=sys.stderr)
    img = images.load(photo, pixel_budget=pixel_budget(a, text))
    eng = _engine(a, text, mmproj)
    try:
        r, last = read_plate_photo(eng, photo, img, sampling=plate_sampling(SamplingOptions()),
                                   max_tokens=2048, use_cache=not a.no_cache,
                                   log=data_dir(a.data_dir) / "readings.jsonl", quant=None)
    finally:
        eng.close()
    keys = [k for k, _ in plate.FIELDS] + ["other"]
    cmp = compare(r.fields, truth, keys)
    show = lambda v: "—" if v in (None, []) else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))  # noqa: E731
    labels = dict(plate.FIELDS, other="Other")
    print(f"{'field':<17} {'read':<24} {'printed on the plate':<24}")
    for k in keys:
        c = cmp[k]
        print(f"{labels[k]:<17} {show(c['read']):<24} {show(c['truth']):<24} {'✓' if c['ok'] else '✗'}")
    right = sum(c["ok"] for c in cmp.values())
    print(f"\n{right} of {len(keys)} fields right · {last.completion_tokens} tokens at "
          f"{last.timings.decode_tps:.0f} tok/s", file=sys.stderr)
    return EXIT_OK
