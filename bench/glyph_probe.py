"""Can a reader learn the plates' glyphs from dense per-character targets within the training budget?

A diagnostic for the demo model (docs/demo-model.md, section 3c). It trains only a *reader* on
``convert.synthetic.plate_task.glyph_targets`` — for every merged image token (28x28 px) and each of its 2x4
slots, which printed character (or none) sits there — and prints, every ``--every`` steps, the
slot accuracy on the slots that hold a character and how often the reader says "none" there:

- ``--reader vit``: the demo model's own vision tower (patch embedding, 4 blocks, merger) and the
  training head of ``train_plates.GlyphHead`` (LayerNorm + linear) on the merger's output: what the
  decoder would receive;
- ``--reader vit-raw``: the same with a plain linear head on the raw merger output, the head section
  3c used: at initialisation that output is ~0.006 in magnitude and this head learns only "none"
  (the bug section 3d found; kept as its negative control);
- ``--reader mlp``: a two-layer MLP on each token's raw 28x28 pixels: a reader with no
  architecture of the model's, to tell "this vision tower is slow" from "the targets are hard".

    PYTHONPATH=. .venv/bin/python bench/glyph_probe.py --reader vit --steps 150 --difficulty 0.3
    PYTHONPATH=. .venv/bin/python bench/glyph_probe.py --reader vit --sheets aligned-large --steps 60

Plates are ``plates.generate(plate_seed(1000, i))`` at 448x336, 8 per step, never reused;
``--sheets LEVEL`` trains on ``convert.synthetic.glyph_sheets`` at that level instead (stage 1 of the
recipe). The rate warms up over the first 30 steps and gradients are clipped at 1, as in training.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.synthetic import plate_task as task  # noqa: E402
from convert.synthetic import glyph_sheets, plates  # noqa: E402

CELL = 28


def batch(start: int, n: int, difficulty: float, sheets: str | None = None):
    if sheets:
        level = {lv.name: lv for lv in glyph_sheets.LEVELS}[sheets]
        items = [glyph_sheets.sheet(level, np.random.default_rng([5, i])) for i in range(start, start + n)]
        return [x for x, _ in items], np.concatenate([t for _, t in items])
    rgb, targets = [], []
    for i in range(start, start + n):
        p = plates.generate(plates.plate_seed(task.TRAIN_SET_SEED, i), size=task.PHOTO_SIZE, difficulty=difficulty)
        rgb.append(np.asarray(p.image.convert("RGB")))
        targets.append(task.glyph_targets(p.meta))
    return rgb, np.concatenate(targets)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reader", choices=("vit", "vit-raw", "mlp"), default="vit")
    ap.add_argument("--sheets", choices=[lv.name for lv in glyph_sheets.LEVELS], help="glyph sheets, not plates")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--difficulty", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    slots, classes = task.GLYPH_ROWS * task.GLYPH_COLS, task.GLYPH_CLASSES
    if a.reader.startswith("vit"):
        from transformers import Glm4vConfig, Glm4vForConditionalGeneration
        model = Glm4vForConditionalGeneration(Glm4vConfig.from_dict(task.build_config())).float()
        visual = model.model.visual
        dim = visual.config.out_hidden_size
        head = torch.nn.Linear(dim, slots * classes)
        if a.reader == "vit":        # as train_plates.GlyphHead
            head = torch.nn.Sequential(torch.nn.LayerNorm(dim), head)
        params = list(visual.parameters()) + list(head.parameters())

        def logits(rgb):
            pix = [task.patchify(x) for x in rgb]
            out = visual(torch.from_numpy(np.concatenate([p for p, _ in pix])),
                         grid_thw=torch.tensor([g for _, g in pix]))
            return head(out.pooler_output)
    else:
        mlp = torch.nn.Sequential(torch.nn.Linear(CELL * CELL * 3, 512), torch.nn.GELU(), torch.nn.Linear(512, slots * classes))
        params = list(mlp.parameters())
        gh, gw = task.PHOTO_SIZE[1] // CELL, task.PHOTO_SIZE[0] // CELL

        def logits(rgb):
            x = np.stack(rgb).astype(np.float32) / 255 - 0.5
            x = x.reshape(len(rgb), gh, CELL, gw, CELL, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, CELL * CELL * 3)
            return mlp(torch.from_numpy(x))
    opt = torch.optim.AdamW(params, lr=a.lr)
    weight = torch.ones(classes)
    weight[task.NO_GLYPH] = 0.1   # as convert.synthetic.train_plates.EMPTY_SLOT_WEIGHT
    print("| step | plates | s | loss | accuracy on printed slots | 'none' said on printed slots |")
    print("|---:|---:|---:|---:|---:|---:|")
    t0 = time.monotonic()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 30)
        rgb, tg = batch(step * a.batch, a.batch, a.difficulty, a.sheets)
        lg = logits(rgb).view(-1, classes)
        target = torch.from_numpy(tg).view(-1)
        loss = F.cross_entropy(lg, target, weight=weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % a.every == 0 or step == a.steps - 1:
            printed = target != task.NO_GLYPH
            pred = lg.argmax(-1)[printed]
            acc = float((pred == target[printed]).float().mean())
            none = float((pred == task.NO_GLYPH).float().mean())
            print(f"| {step + 1} | {(step + 1) * a.batch} | {time.monotonic() - t0:.0f} | {float(loss.detach()):.3f} | "
                  f"{acc:.3f} | {none:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
