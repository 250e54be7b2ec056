"""Train the demo model (``glmv-plates``) by the staged recipe of ``convert.synthetic.stage_plan``.

    python -m convert.synthetic.train_stages OUT_DIR [--seed 0] [--resume] [--threads 2]

Glyphs first for the vision tower alone, then the decoder made to need the photo, then the
read-plate JSON, then everything together (the table and its reasons: ``stage_plan``). Each stage
ends on its measured threshold or at its step cap. Writes, each atomically:

- ``OUT_DIR/checkpoint.pt`` every ``--checkpoint-minutes`` and at each stage's end: weights, the
  optimizer, where the recipe stands; ``--resume`` continues from it (an interrupted run loses at
  most those minutes, and resumes onto the same samples);
- ``OUT_DIR/curve.jsonl``: every stage's curve on its own evaluation set;
- ``OUT_DIR/hf/`` (the model in Hugging Face layout, the input of ``plate_release``) and
  ``OUT_DIR/train.json`` (per stage: passed or capped, at which step, minutes) at the end.

Development-only (torch, transformers); the product never imports it.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from convert.synthetic import plate_task as task
from convert.synthetic import stage_plan as plan
from convert.synthetic import synth
from convert.synthetic import train_plates as tp
from runtime.common.files import atomic_write_bytes, atomic_write_text
from runtime.common.progress_bar import progress_bar

WARMUP = 20
# the vision tower's own parts: frozen while the decoder learns to use them ("decoder" stages)
TOWER_PARTS = ("patch_embed.", "embeddings.", "blocks.", "post_conv_layernorm.", "post_layernorm.")


class _StageData:
    """Map-style dataset of one stage's samples ``start..stop`` (generated in a worker process)."""

    def __init__(self, tok_dir: Path, seed: int, index: int, st: plan.Stage, start: int, stop: int):
        self.tok_dir, self.seed, self.index, self.start, self.stop = tok_dir, seed, index, start, stop
        self.st = st
        self.tok = None

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, k):
        i = self.start + k
        rng, seed = plan.stage_rng(self.seed, self.index, i), plan.train_plate_seed(self.seed, self.index, i)
        if self.st.glyphs_only:
            rgb, glyphs = plan.glyph_item(self.st, rng, seed)
            return (*task.patchify(rgb), None, None, glyphs)
        if self.tok is None:
            self.tok = tp._tokenizer(self.tok_dir)
        rgb, glyphs, turns = plan.answer_item(self.st, rng, seed)
        ids, sup = tp.encode_conversation(self.tok, turns, task.n_image_tokens(*task.PHOTO_SIZE))
        return (*task.patchify(rgb), ids, sup, glyphs)


def _glyph_batch(items):
    import torch
    return (torch.from_numpy(np.concatenate([it[0] for it in items])), torch.tensor([it[1] for it in items]),
            torch.from_numpy(np.concatenate([it[4] for it in items])))


def _set_trainable(model, head, st: plan.Stage) -> list:
    """requires_grad per the stage; the trainable parameters, the glyph head's included."""
    for n, p in model.named_parameters():
        vision = n.startswith("model.visual.")
        tower = vision and n.removeprefix("model.visual.").startswith(TOWER_PARTS)
        p.requires_grad_({"tower": vision, "decoder": not tower, "all": True}[st.train])
    return [p for p in model.parameters() if p.requires_grad] + list(head.parameters())


def _optimizer(model, head, st: plan.Stage):
    import torch
    params = _set_trainable(model, head, st)
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                             lr=st.lr, betas=(0.9, 0.98), eps=1e-8)


def _lr(st: plan.Stage, k: int, last: bool) -> float:
    if k < WARMUP:
        return st.lr * (k + 1) / WARMUP
    if not last:       # the stage ends on its threshold, whenever that comes: a constant rate
        return st.lr
    f = (k - WARMUP) / max(1, st.max_steps - WARMUP)
    return st.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * f)))


def _glyph_eval(model, head, items) -> dict:
    import torch
    model.eval()
    ok = n = none = 0
    with torch.no_grad():
        for k in range(0, len(items), 8):
            pix, grid, glyphs = _glyph_batch([(*task.patchify(rgb), None, None, g) for rgb, g in items[k:k + 8]])
            dev = next(model.parameters()).device
            model.model.visual(pix.to(dev), grid_thw=grid.to(dev))
            logits = head.logits().view(-1, task.GLYPH_CLASSES)
            target = glyphs.to(dev).view(-1)
            printed = target != task.NO_GLYPH
            pred = logits.argmax(-1)[printed]
            ok += int((pred == target[printed]).sum())
            none += int((pred == task.NO_GLYPH).sum())
            n += int(printed.sum())
    model.train()
    return {"glyph_acc": round(ok / max(1, n), 4), "glyph_none": round(none / max(1, n), 4)}


class Run:
    """One training run's state machine: which stage, how far into it, the curve so far."""

    def __init__(self, out_dir: Path, seed: int, threads: int, batch: int, checkpoint_minutes: float,
                 stages: tuple[plan.Stage, ...] = plan.STAGES, device: str = "cpu", workers: int = 1):
        import torch
        from transformers import Glm4vConfig, Glm4vForConditionalGeneration
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        self.out, self.seed, self.batch, self.stages = out_dir, seed, batch, stages
        self.checkpoint_seconds = checkpoint_minutes * 60
        out_dir.mkdir(parents=True, exist_ok=True)
        self.config = task.build_config()
        self.tok_dir = out_dir / "tokenizer"
        self.tok_dir.mkdir(exist_ok=True)
        synth.build_tokenizer_files(self.tok_dir, task.task_bpe())
        self.tok = tp._tokenizer(self.tok_dir)
        self.pad_id, self.image_id = self.config["text_config"]["pad_token_id"], self.config["image_token_id"]
        self.model = Glm4vForConditionalGeneration(Glm4vConfig.from_dict(self.config)).float()
        self.device, self.workers = device, workers
        self.model.to(device)
        self.head = tp.GlyphHead(self.model, 1.0)
        self.head.net.to(device)
        self.stage, self.stage_step, self.step, self.minutes_before = 0, 0, 0, 0.0
        self.rows: list[dict] = []
        self.results: list[dict] = []
        self.losses: list[float] = []      # this stage's training losses (the curve's train_loss)
        self.opt_state = None
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ checkpoints
    def minutes(self) -> float:
        return round(self.minutes_before + (time.monotonic() - self.t0) / 60, 2)

    def save_checkpoint(self, opt) -> None:
        import torch
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "head": self.head.net.state_dict(),
                    "opt": opt.state_dict() if opt is not None else None, "stage": self.stage,
                    "stage_step": self.stage_step, "step": self.step, "rows": self.rows, "results": self.results,
                    "losses": self.losses,
                    "minutes": self.minutes(), "seed": self.seed, "batch": self.batch}, buf)
        atomic_write_bytes(self.out / "checkpoint.pt", buf.getvalue())

    def load_checkpoint(self) -> None:
        import torch
        ck = torch.load(self.out / "checkpoint.pt", weights_only=False, map_location=self.device)
        if (ck["seed"], ck["batch"]) != (self.seed, self.batch):
            raise SystemExit(f"{self.out}/checkpoint.pt is of --seed {ck['seed']} --batch {ck['batch']}: "
                             "resume with the same arguments")
        self.model.load_state_dict(ck["model"])
        self.head.net.load_state_dict(ck["head"])
        self.stage, self.stage_step, self.step = ck["stage"], ck["stage_step"], ck["step"]
        self.rows, self.results, self.minutes_before, self.opt_state = ck["rows"], ck["results"], ck["minutes"], ck["opt"]
        self.losses = ck.get("losses", [])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, st: plan.Stage, evals, losses: list[float]) -> dict:
        if st.glyphs_only:
            figures = _glyph_eval(self.model, self.head, evals)
        else:
            curve_items, curve_spans, short_items = evals
            figures = tp.evaluate(self.model, curve_items, curve_spans, self.pad_id, self.image_id, self.head)
            short = tp.evaluate(self.model, short_items, [[] for _ in short_items], self.pad_id, self.image_id)
            figures.update(short_exact_tf=short["answer_exact_tf"], short_image_gain=short["image_gain"])
        row = {"stage": st.name, "stage_step": self.stage_step, "step": self.step,
               "plates_seen": self.step * self.batch, "minutes": self.minutes(),
               "train_loss": round(float(np.mean(losses[-st.eval_every:])), 4) if losses else None, **figures}
        self.rows.append(row)
        atomic_write_text(self.out / "curve.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))
        print(f"train_stages: {json.dumps(row)}", file=sys.stderr, flush=True)
        return row

    def eval_set(self, st: plan.Stage):
        if st.glyphs_only:
            return plan.glyph_eval_items(st)
        curve_items, curve_spans = tp.curve_set(self.tok)
        short = []
        for rgb, glyphs, turns in plan.short_eval_plates():
            ids, sup = tp.encode_conversation(self.tok, turns, task.n_image_tokens(*task.PHOTO_SIZE))
            short.append((*task.patchify(rgb), ids, sup, glyphs))
        return curve_items, curve_spans, short

    # ------------------------------------------------------------------ training
    def run_stage(self) -> None:
        import torch
        st = self.stages[self.stage]
        last = self.stage == len(self.stages) - 1
        opt = _optimizer(self.model, self.head, st)
        if self.opt_state is not None:
            opt.load_state_dict(self.opt_state)
            self.opt_state = None
        evals = self.eval_set(st)
        collate = _glyph_batch if st.glyphs_only else (lambda items: tp.collate(items, self.pad_id, self.image_id))
        data = _StageData(self.tok_dir, self.seed, self.stage, st, self.stage_step * self.batch, st.max_steps * self.batch)
        loader = torch.utils.data.DataLoader(data, batch_size=self.batch, shuffle=False, num_workers=self.workers,
                                             prefetch_factor=4, collate_fn=collate,
                                             worker_init_fn=lambda _: torch.set_num_threads(1))
        trainable = [p for g in opt.param_groups for p in g["params"]]
        if self.stage_step == 0:
            self.losses = []
        losses = self.losses
        passed = None
        if self.stage_step == 0:
            row = self.evaluate(st, evals, losses)
            passed = row[st.metric] >= st.pass_at or None
        last_save = time.monotonic()
        bar = progress_bar(st.max_steps, f"{self.stage + 1}/{len(self.stages)} {st.name}", initial=self.stage_step)
        for b in loader if passed is None else ():
            for g in opt.param_groups:
                g["lr"] = _lr(st, self.stage_step, last)
            if st.glyphs_only:
                self.model.model.visual(b[0].to(self.device), grid_thw=b[1].to(self.device))
                loss, _ = self.head.loss(b[2])
            else:
                loss, _, _ = tp._loss(self.model, b)
                if st.glyph_weight:
                    loss = loss + st.glyph_weight * self.head.loss(b[6])[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            self.stage_step += 1
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", refresh=False)
            if self.stage_step % st.eval_every == 0 or self.stage_step == st.max_steps:
                row = self.evaluate(st, evals, losses)
                if row[st.metric] >= st.pass_at:
                    passed = True
                    break
            if time.monotonic() - last_save > self.checkpoint_seconds:
                self.save_checkpoint(opt)
                last_save = time.monotonic()
        bar.close()
        final = self.rows[-1]
        self.results.append({"stage": st.name, "passed": bool(passed), "metric": st.metric, "pass_at": st.pass_at,
                             "value": final[st.metric], "steps": self.stage_step, "minutes_at_end": self.minutes()})
        self.stage, self.stage_step, self.losses = self.stage + 1, 0, []
        self.save_checkpoint(None)

    def train(self) -> dict:
        while self.stage < len(self.stages):
            self.run_stage()
        tp.save_hf(self.model, self.config, self.out / "hf")
        import torch
        summary = {"recipe": "convert.synthetic.stage_plan", "seed": self.seed, "batch": self.batch,
                   "threads": torch.get_num_threads(), "minutes": self.minutes(), "plates_seen": self.step * self.batch,
                   "parameters": sum(p.numel() for p in self.model.parameters()), "stages": self.results,
                   "final": self.rows[-1], "torch": torch.__version__}
        atomic_write_text(self.out / "train.json", json.dumps(summary, indent=2) + "\n")
        return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.train_stages", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    ap.add_argument("--fresh", action="store_true", help="start over, replacing OUT_DIR's checkpoint")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--device", default="cpu", help="torch device (the recipe is sized for 2 CPU cores; "
                    "a GPU run shows what more steps would give: --steps-scale)")
    ap.add_argument("--workers", type=int, default=1, help="data worker processes")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply every stage's step cap (exploration only: the release uses 1)")
    a = ap.parse_args(argv)
    out = Path(a.out_dir)
    has_checkpoint = (out / "checkpoint.pt").is_file()
    if has_checkpoint and not (a.resume or a.fresh):
        ap.error(f"{out} holds a checkpoint of an earlier run: --resume continues it, --fresh starts over")
    if a.resume and not has_checkpoint:
        ap.error(f"--resume: {out}/checkpoint.pt does not exist")
    stages = tuple(dataclasses.replace(st, max_steps=max(1, round(st.max_steps * a.steps_scale)))
                   for st in plan.STAGES)
    run = Run(out, a.seed, a.threads, a.batch, a.checkpoint_minutes, stages, a.device, a.workers)
    if a.resume:
        run.load_checkpoint()
    print(json.dumps(run.train(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
