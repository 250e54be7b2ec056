"""Train the demo model (``glmv-plates``) on synthetic nameplate photos, on CPU torch.

    python -m convert.synthetic.train_plates OUT_DIR [--steps 1100] [--batch 8] [--seed 0]

Seeded and reproducible: sample ``i`` of the run is ``convert.synthetic.plates.generate(plate_seed(1000, i))``
with a difficulty and questions drawn from ``(seed, i)``, so the same arguments give the same data
in the same order (and, with the same torch build and thread count, the same weights). Writes, each
atomically:

- ``OUT_DIR/hf/``: the model in Hugging Face layout (config, tokenizer, chat template, BF16 sharded
  safetensors + index), the input of ``glmv convert``;
- ``OUT_DIR/curve.jsonl``: the learning curve (train loss; teacher-forced accuracy on 32 plates of
  another set seed, measured every ``--eval-every`` steps);
- ``OUT_DIR/train.json``: the arguments, timings and final figures.

torch and transformers are development dependencies (``pip install -e .[dev]``); the product never
imports this module.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from convert.synthetic import plate_task as task
from convert.synthetic import plates
from convert.synthetic import synth
from runtime.common.files import atomic_write_text

CURVE_PLATES = 32
EMPTY_SLOT_WEIGHT = 0.1


def _tokenizer(hf_dir: Path):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(hf_dir / "tokenizer.json"))


def encode_conversation(tok, turns: list[task.Turn], n_image: int) -> tuple[list[int], list[bool]]:
    """Token ids and, per token, whether it is supervised (an answer or a stop token)."""
    ids: list[int] = []
    sup: list[bool] = []
    for text, supervised in task.conversation_segments(turns, n_image):
        e = tok.encode(text, add_special_tokens=False).ids
        ids += e
        sup += [supervised] * len(e)
    return ids, sup


def sample(i: int, seed: int, total: int, qa_share: float = 0.25) -> dict:
    """Training sample ``i``: a photographed plate and one conversation about it."""
    rng = np.random.default_rng([seed, i, 1])
    progress = i / max(1, total)
    # easy photos first, then the full range around the held-out default (0.5)
    difficulty = float(rng.uniform(0.0, 0.5) if progress < 0.15 else rng.uniform(0.1, 0.95))
    p = plates.generate(plates.plate_seed(task.TRAIN_SET_SEED + seed, i), size=task.PHOTO_SIZE,
                        difficulty=difficulty)
    if rng.random() >= qa_share:
        turns = [task.read_plate_turn(p.fields)]
    else:
        turns = task.qa_turns(p.fields, rng, int(rng.integers(1, 3)))
    return {"rgb": np.asarray(p.image.convert("RGB")), "turns": turns, "meta": p.meta}


class _Data:
    """Map-style dataset for torch's DataLoader: plate generation runs in a worker process."""

    def __init__(self, hf_dir: Path, seed: int, total: int, qa_share: float, glyphs: bool = False):
        self.hf_dir, self.seed, self.total, self.qa_share, self.glyphs = hf_dir, seed, total, qa_share, glyphs
        self.tok = None

    def __len__(self):
        return self.total

    def __getitem__(self, i):
        if self.tok is None:
            self.tok = _tokenizer(self.hf_dir)
        s = sample(i, self.seed, self.total, self.qa_share)
        patches, grid = task.patchify(s["rgb"])
        ids, sup = encode_conversation(self.tok, s["turns"], task.n_image_tokens(*task.PHOTO_SIZE))
        return patches, grid, ids, sup, task.glyph_targets(s["meta"]) if self.glyphs else None


def collate(items, pad_id: int, image_id: int):
    import torch
    n = max(len(it[2]) for it in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    for b, (_, _, seq, sup, _) in enumerate(items):
        t = torch.tensor(seq)
        ids[b, :len(seq)] = t
        mask[b, :len(seq)] = 1
        lab = t.clone()
        lab[~torch.tensor(sup)] = -100
        labels[b, :len(seq)] = lab
    pixels = torch.from_numpy(np.concatenate([it[0] for it in items]))
    grid = torch.tensor([it[1] for it in items], dtype=torch.long)
    glyphs = torch.from_numpy(np.concatenate([it[4] for it in items])) if items[0][4] is not None else None
    return ids, mask, labels, pixels, grid, (ids == image_id).long(), glyphs


class GlyphHead:
    """Training-only reading aid: a probe on the image features the decoder receives (the merger's
    output), trained to say which character sits in each slot of each image token
    (:func:`convert.synthetic.plate_task.glyph_targets`). It is never saved: the released model is the
    plain architecture. Why: on the answer loss alone the decoder learns the answers' format and
    common values from text within a few hundred plates and the photo's features collapse to a
    constant (docs/demo-model.md, section 3); dense per-character targets keep them informative.

    The features are layer-normalised before the linear map: at initialisation the merger's output
    is ~0.006 in magnitude (its SwiGLU multiplies two small projections), and a linear head on that
    raw scale learned nothing but "no glyph here" (docs/demo-model.md §3d, aligned sheets: 0.007 of
    printed slots after 328 sheets without the norm, 0.874 after 480 with it; an MLP on the raw
    pixels 0.844)."""

    def __init__(self, model, weight: float):
        import torch
        self.weight = weight
        dim = model.config.vision_config.out_hidden_size
        self.net = torch.nn.Sequential(torch.nn.LayerNorm(dim),
                                       torch.nn.Linear(dim, task.GLYPH_ROWS * task.GLYPH_COLS * task.GLYPH_CLASSES))
        self.features = None
        model.model.visual.register_forward_hook(self._keep)

    def _keep(self, _module, _inputs, output):
        self.features = output.pooler_output

    def parameters(self):
        return self.net.parameters()

    def logits(self):
        return self.net(self.features.float())

    def loss(self, glyphs):
        """(cross-entropy over every slot, accuracy over the slots that hold a character)."""
        import torch
        import torch.nn.functional as F
        logits = self.logits().view(-1, task.GLYPH_CLASSES)
        target = glyphs.to(logits.device).view(-1)
        # nine slots in ten are empty: without down-weighting them "nothing here" is the whole answer
        weight = torch.ones(task.GLYPH_CLASSES, device=logits.device)
        weight[task.NO_GLYPH] = EMPTY_SLOT_WEIGHT
        ce = F.cross_entropy(logits, target, weight=weight)
        printed = target != task.NO_GLYPH
        acc = (logits.argmax(-1)[printed] == target[printed]).float().mean() if printed.any() else ce * 0
        return ce, acc


def _loss(model, batch):
    import torch.nn.functional as F
    dev = next(model.parameters()).device   # a GPU run (train_stages --device) moves each batch over
    ids, mask, labels, pixels, grid, mm = (x.to(dev) for x in batch[:6])
    # mm_token_type_ids (1 = image token) is what the processor would return for M-RoPE
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grid,
                mm_token_type_ids=mm, use_cache=False)
    logits = out.logits[:, :-1].float()
    target = labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    return loss, logits, target


def curve_set(tok) -> list:
    """Teacher-forced check plates: read-plate conversations on another set seed at difficulty 0.5."""
    items, spans = [], []
    for i in range(CURVE_PLATES):
        p = plates.generate(plates.plate_seed(task.CURVE_SET_SEED, i), size=task.PHOTO_SIZE)
        patches, grid = task.patchify(np.asarray(p.image.convert("RGB")))
        ids, sup = encode_conversation(tok, [task.read_plate_turn(p.fields)], task.n_image_tokens(*task.PHOTO_SIZE))
        items.append((patches, grid, ids, sup, task.glyph_targets(p.meta)))
        # which supervised tokens spell the serial number: tokenize the answer with offsets
        ans = "\n" + task.answer_json(p.fields)
        enc = tok.encode(ans, add_special_tokens=False)
        serial = p.fields.get("serial_number") or ""
        key = '"serial_number": "'
        c0 = ans.find(key) + len(key)
        c1 = c0 + len(serial)
        spans.append([k for k, (a, b) in enumerate(enc.offsets) if a < c1 + 1 and b > c0])
    return items, spans


def evaluate(model, items, spans, pad_id: int, image_id: int, glyph_head: GlyphHead | None = None) -> dict:
    import torch
    model.eval()
    tok_ok = tok_n = serial_ok = all_ok = 0
    own, blank, glyph_acc = [], [], []
    with torch.no_grad():
        for k in range(0, len(items), 8):
            chunk = items[k:k + 8]
            batch = collate(chunk, pad_id, image_id)
            loss, logits, target = _loss(model, batch)
            if glyph_head is not None:
                glyph_acc.append(float(glyph_head.loss(batch[6])[1]))
            # the same answers with a blank photo: how much the photo itself helps (0 = ignored)
            grey = [(np.zeros_like(it[0]),) + tuple(it[1:]) for it in chunk]
            own.append(float(loss))
            blank.append(float(_loss(model, collate(grey, pad_id, image_id))[0]))
            pred = logits.argmax(-1)
            for b, it in enumerate(chunk):
                sup = target[b] != -100
                right = (pred[b] == target[b])[sup]
                tok_ok += int(right.sum())
                tok_n += int(sup.sum())
                all_ok += bool(right.all())
                # the answer's tokens start at the first supervised position; the serial span is
                # relative to "\n"+answer, whose tokens are exactly those supervised positions
                sp = [s for s in spans[k + b] if s < len(right)]
                serial_ok += bool(right[sp].all()) if sp else False
    model.train()
    n = len(items)
    return {"token_acc": round(tok_ok / max(1, tok_n), 4), "serial_exact_tf": round(serial_ok / n, 4),
            "answer_exact_tf": round(all_ok / n, 4), "loss": round(float(np.mean(own)), 4),
            "image_gain": round(float(np.mean(blank) - np.mean(own)), 4),
            **({"glyph_acc": round(float(np.mean(glyph_acc)), 4)} if glyph_acc else {})}


def save_hf(model, config: dict, out: Path) -> Path:
    """The trained weights in the release layout, BF16, written to a temporary folder and renamed."""
    import torch
    from safetensors.torch import save_file
    # a whole folder is published, so it is staged and renamed; its small files still go through the
    # atomic write (synth._write_json), the shards are written by safetensors inside the staging folder
    part = out.with_name(out.name + f".part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    synth._write_json(part / "config.json", config)
    eos = config["text_config"]["eos_token_id"]
    synth._write_json(part / "generation_config.json", {
        "_from_model_config": True, "eos_token_id": eos, "pad_token_id": eos[0], "do_sample": False,
        "transformers_version": config["transformers_version"]})
    synth._write_json(part / "preprocessor_config.json", synth.PREPROCESSOR_CONFIG)
    synth.build_tokenizer_files(part, task.task_bpe())
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    files = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    for f, keys in zip(files, shards):
        save_file({k: state[k] for k in keys}, str(part / f), metadata={"format": "pt"})
        with open(part / f, "rb") as fh:
            os.fsync(fh.fileno())
    total = sum(v.numel() * 2 for v in state.values())
    synth._write_json(part / "model.safetensors.index.json", {
        "metadata": {"total_size": total}, "weight_map": {k: f for f, keys in zip(files, shards) for k in keys}})
    synth._fsync_dir(part)
    if out.exists():
        shutil.rmtree(out)
    part.rename(out)
    synth._fsync_dir(out.parent)
    return out


def train(out_dir: Path, steps: int, batch: int, seed: int, lr: float, eval_every: int, threads: int,
          vision_lr_scale: float = 1.0, qa_share: float = 0.25, glyph_weight: float = 0.0) -> dict:
    import torch
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = task.build_config()
    tok_dir = out_dir / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    synth.build_tokenizer_files(tok_dir, task.task_bpe())
    tok = _tokenizer(tok_dir)
    pad_id, image_id = config["text_config"]["pad_token_id"], config["image_token_id"]
    model = Glm4vForConditionalGeneration(Glm4vConfig.from_dict(config)).float()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train_plates: {n_params / 1e6:.2f} M parameters, {steps} steps x {batch}", file=sys.stderr)

    glyph_head = GlyphHead(model, glyph_weight) if glyph_weight > 0 else None
    groups: dict[tuple[bool, bool], list] = {}
    named = list(model.named_parameters())
    named += [(f"visual.glyph_head.{n}", p) for n, p in glyph_head.net.named_parameters()] if glyph_head else []
    for n, p in named:
        groups.setdefault((p.ndim >= 2 and "embed" not in n, ".visual." in f".{n}"), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "weight_decay": 0.01 if decay else 0.0,
                              "lr_scale": vision_lr_scale if vision else 1.0}
                             for (decay, vision), ps in sorted(groups.items())],
                            lr=lr, betas=(0.9, 0.98), eps=1e-8)
    warmup = min(60, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        f = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * f)))

    data = _Data(tok_dir, seed, steps * batch, qa_share, glyphs=glyph_head is not None)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False, num_workers=1, prefetch_factor=4,
                                         collate_fn=lambda items: collate(items, pad_id, image_id),
                                         worker_init_fn=lambda _: torch.set_num_threads(1))
    curve_items, curve_spans = curve_set(tok)
    curve_path = out_dir / "curve.jsonl"
    curve_rows: list[dict] = []
    t0 = time.monotonic()
    losses: list[float] = []
    glyph_accs: list[float] = []

    def record(step: int) -> None:
        row = {"step": step, "plates_seen": step * batch, "minutes": round((time.monotonic() - t0) / 60, 2),
               "train_loss": round(float(np.mean(losses[-eval_every:])), 4) if losses else None,
               **evaluate(model, curve_items, curve_spans, pad_id, image_id, glyph_head)}
        curve_rows.append(row)
        atomic_write_text(curve_path, "".join(json.dumps(r) + "\n" for r in curve_rows))
        print(f"train_plates: {json.dumps(row)}", file=sys.stderr, flush=True)

    model.train()
    record(0)
    for step, b in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = lr_at(step) * g["lr_scale"]
        loss, _, _ = _loss(model, b)
        total = loss
        if glyph_head is not None:
            glyph_loss, glyph_acc = glyph_head.loss(b[6])
            total = loss + glyph_head.weight * glyph_loss
            glyph_accs.append(float(glyph_acc))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            el = time.monotonic() - t0
            glyph = f" glyph acc {np.mean(glyph_accs[-10:]):.2f}" if glyph_accs else ""
            print(f"\rtrain_plates: step {step + 1}/{steps} loss {np.mean(losses[-10:]):.3f}{glyph} "
                  f"{el / 60:.1f} min, ~{el / (step + 1) * (steps - step - 1) / 60:.0f} min left",
                  end="", file=sys.stderr, flush=True)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            print(file=sys.stderr)
            record(step + 1)
    minutes = (time.monotonic() - t0) / 60
    save_hf(model, config, out_dir / "hf")
    summary = {"steps": steps, "batch": batch, "seed": seed, "lr": lr, "threads": threads,
               "vision_lr_scale": vision_lr_scale, "qa_share": qa_share, "glyph_weight": glyph_weight,
               "parameters": n_params, "minutes": round(minutes, 2), "plates_seen": steps * batch,
               "final": curve_rows[-1], "torch": torch.__version__}
    atomic_write_text(out_dir / "train.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.train_plates", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--steps", type=int, default=1100, help="optimizer steps (default 1100: ~55 min on 2 cores)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vision-lr-scale", type=float, default=1.0, help="vision tower lr = lr x this")
    ap.add_argument("--qa-share", type=float, default=0.25, help="share of short-question samples")
    ap.add_argument("--glyph-weight", type=float, default=0.0,
                    help="weight of a training-only per-character loss on the image features (default 0: off; "
                         "docs/demo-model.md section 3c)")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.batch < 1:
        ap.error("--steps and --batch must be at least 1")
    s = train(Path(a.out_dir), a.steps, a.batch, a.seed, a.lr, a.eval_every, a.threads,
              a.vision_lr_scale, a.qa_share, a.glyph_weight)
    print(json.dumps(s, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
