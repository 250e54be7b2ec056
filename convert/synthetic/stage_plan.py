"""The demo model's staged recipe as a table: what each stage trains, on what, and when it is done.

Why stages (docs/demo-model.md §3–3d): trained together from the start, the decoder learns the
answers' format and priors from text within a few hundred plates and the photo stops mattering
before the vision tower has learned a single glyph. So the tower first learns glyphs alone, on a
curriculum (``convert.synthetic.glyph_sheets``, then real plates with per-character targets); then,
with the tower frozen, the merger and decoder learn questions only the photo can answer (serial and
model numbers); then the read-plate JSON; then everything together at a lower rate.

A stage ends when its measured figure (on its own fixed evaluation set) reaches ``pass_at`` — not
after a number of steps; ``max_steps`` is the budget cap, sized so the whole recipe fits the
training budget on 2 CPU cores. Stage data is a pure function of (seed, stage, index), so a run and
its resumed continuation see the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convert.synthetic import glyph_sheets
from convert.synthetic import plate_task as task
from convert.synthetic import plates

EVAL_SEED = 11                       # the stage evaluation sets' seed (not the held-out set's 7)
GLYPH_EVAL_ITEMS = 16


@dataclass(frozen=True)
class Stage:
    name: str
    data: str               # a glyph_sheets level, "plates" (glyph targets), "short" or "read-plate"
    train: str              # "tower": patch embedding + blocks + merger and the glyph head; "decoder": the
                            # merger and the language model (tower frozen); "all"
    lr: float
    max_steps: int
    metric: str             # the evaluation figure that ends the stage
    pass_at: float
    glyph_weight: float = 0.0   # weight of the per-character loss beside the answer loss
    difficulty: tuple[float, float] = (0.0, 0.8)
    qa_share: float = 0.0       # read-plate stages: share of short questions among the conversations
    eval_every: int = 50

    @property
    def glyphs_only(self) -> bool:
        return self.train == "tower"


STAGES: tuple[Stage, ...] = (
    Stage("glyphs-aligned-large", "aligned-large", "tower", 1e-3, 200, "glyph_acc", 0.90, eval_every=25),
    Stage("glyphs-aligned", "aligned", "tower", 1e-3, 300, "glyph_acc", 0.85),
    Stage("glyphs-free", "free", "tower", 1e-3, 400, "glyph_acc", 0.75),
    Stage("glyphs-plates", "plates", "tower", 1e-3, 500, "glyph_acc", 0.70),
    Stage("read-short", "short", "decoder", 2e-3, 600, "short_exact_tf", 0.80, glyph_weight=0.5, eval_every=100),
    Stage("read-plate", "read-plate", "decoder", 1.5e-3, 700, "serial_exact_tf", 0.90, glyph_weight=0.5,
          qa_share=0.3, eval_every=100),
    Stage("all", "read-plate", "all", 4e-4, 250, "serial_exact_tf", 1.01, glyph_weight=0.5, qa_share=0.3,
          eval_every=100),
)
LEVELS = {lv.name: lv for lv in glyph_sheets.LEVELS}


def stage_rng(seed: int, stage: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, 100 + stage, i])


def _plate(st: Stage, rng: np.random.Generator, plate_seed: int):
    return plates.generate(plate_seed, size=task.PHOTO_SIZE, difficulty=float(rng.uniform(*st.difficulty)))


def glyph_item(st: Stage, rng: np.random.Generator, plate_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, glyph targets) for a glyph stage: a sheet, or a photographed plate."""
    if st.data in LEVELS:
        return glyph_sheets.sheet(LEVELS[st.data], rng)
    p = _plate(st, rng, plate_seed)
    return np.asarray(p.image.convert("RGB")), task.glyph_targets(p.meta)


def answer_item(st: Stage, rng: np.random.Generator, plate_seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(rgb, glyph targets, turns) for an answer stage."""
    p = _plate(st, rng, plate_seed)
    if st.data == "short":
        turns = task.short_turns(p.fields, rng, int(rng.integers(1, 3)))
    elif rng.random() < st.qa_share:
        turns = task.qa_turns(p.fields, rng, int(rng.integers(1, 3)))
    else:
        turns = [task.read_plate_turn(p.fields)]
    return np.asarray(p.image.convert("RGB")), task.glyph_targets(p.meta), turns


def train_plate_seed(seed: int, stage: int, i: int) -> int:
    """Every stage draws its own plates from the training set (seed 1000 + seed), never reused."""
    return plates.plate_seed(task.TRAIN_SET_SEED + seed, stage * 10_000_000 + i)


def glyph_eval_items(st: Stage) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed evaluation set of a glyph stage: sheets of its level, or curve-set plates at 0.5."""
    out = []
    for k in range(GLYPH_EVAL_ITEMS):
        if st.data in LEVELS:
            out.append(glyph_sheets.sheet(LEVELS[st.data], np.random.default_rng([EVAL_SEED, k])))
        else:
            p = plates.generate(plates.plate_seed(task.CURVE_SET_SEED, k), size=task.PHOTO_SIZE)
            out.append((np.asarray(p.image.convert("RGB")), task.glyph_targets(p.meta)))
    return out


def short_eval_plates(n: int = 32) -> list[tuple[np.ndarray, np.ndarray, list]]:
    """Curve-set plates (difficulty 0.5) each asked its serial number, the first phrasing."""
    out = []
    for k in range(n):
        p = plates.generate(plates.plate_seed(task.CURVE_SET_SEED, k), size=task.PHOTO_SIZE)
        turn = task.Turn(task.QUESTIONS["serial_number"][0], p.fields.get("serial_number") or task.NOT_PRINTED)
        out.append((np.asarray(p.image.convert("RGB")), task.glyph_targets(p.meta), [turn]))
    return out
