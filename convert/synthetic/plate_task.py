"""The nameplate-reading task the demo model is trained on: its tokenizer, config and conversations.

Everything here is plain Python + numpy (no torch), shared by the trainer (``convert.synthetic.train_plates``),
the accuracy benchmark and the tests, so the sequences the model learns are exactly the prompts the
runtime sends: the runtime's read-plate prompt verbatim, through the GLM chat template with thinking
off, the image as ``<|begin_of_image|>`` + one ``<|image|>`` per merged patch + ``<|end_of_image|>``,
and the answer as the JSON the runtime's schema grammar admits.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np

from runtime.tasks import plate as plate_schema

from convert.synthetic import plates

from convert.synthetic import synth

# The model: the real architecture, small enough to train on 2 CPU cores in an hour (see
# docs/demo-model.md for the step rates that chose it). vision_image_size 448 gives a 32x32
# position table, interpolated to each photo's grid like the release's 336.
SPEC = synth.SynthSpec(hidden_size=192, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                       intermediate_size=512, mrope_section=(2, 3, 3), vision_depth=4, vision_hidden_size=96,
                       vision_num_heads=3, vision_image_size=448, vision_out_hidden_size=192,
                       vision_intermediate_size=384, default_shards=2)
PHOTO_SIZE = (448, 336)                        # training photos; the runtime feeds this size unchanged
PIXEL_BUDGET = PHOTO_SIZE[0] * PHOTO_SIZE[1]   # larger photos are reduced to it (the model's manifest says so)
TRAIN_SET_SEED, CURVE_SET_SEED, HELDOUT_SET_SEED = 1000, 3, 7
TOKENIZER_PLATES = 3000                        # training plates whose text the task tokenizer is fitted on
MAX_MERGES = 1400

# Short questions: English and Chinese phrasings per field; the answer is the value as printed.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "serial_number": ("What is the serial number?", "Serial number?", "Read the serial number.",
                      "What is the serial number on this nameplate?", "铭牌上的编号是多少？", "出厂编号是多少？"),
    "model": ("What is the model?", "Which model is this?", "型号是什么？"),
    "manufacturer": ("Who is the manufacturer?", "Who made this equipment?", "制造商是谁？"),
    "rated_voltage": ("What is the rated voltage?", "Rated voltage?", "额定电压是多少？"),
    "current": ("What is the rated current?", "额定电流是多少？"),
    "power": ("What is the rated power?", "How much power is it rated for?", "额定功率是多少？"),
    "frequency": ("What is the frequency?", "频率是多少？"),
    "speed": ("What is the rated speed?", "转速是多少？"),
    "year": ("When was it made?", "出厂日期是什么？"),
    "ip_rating": ("What is the IP rating?", "防护等级是多少？"),
}
NOT_PRINTED = "Not on the plate."


def answer_json(fields: dict) -> str:
    """The read-plate answer: keys in the schema's order, the separators and raw UTF-8 that the
    schema grammar (properties in order, one space after ``:`` and ``,``) admits."""
    out = {k: fields.get(k) for k, _ in plate_schema.FIELDS}
    out["other"] = [{"name": o["name"], "value": o["value"]} for o in fields.get("other") or []]
    return json.dumps(out, ensure_ascii=False)


def _corpus_text() -> str:
    lines = [plate_schema.PROMPT, NOT_PRINTED, *(q for qs in QUESTIONS.values() for q in qs)]
    for i in range(TOKENIZER_PLATES):
        seed = plates.plate_seed(TRAIN_SET_SEED, i)
        lang = plates.LANGS[i % 3]
        lines.append(answer_json(plates.make_fields(seed, lang).fields))
    return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def task_bpe() -> synth.Bpe:
    """Byte-level BPE fitted on the plates' answers, with every digit its own token."""
    return synth._train_bpe(MAX_MERGES, _corpus_text(), split_digits=True)


def build_config() -> dict:
    return synth.build_config(SPEC, "v5", task_bpe())


# --------------------------------------------------------------------------- conversations

USER, ASSISTANT = "<|user|>", "<|assistant|>"
IMAGE, BEGIN_IMAGE, END_IMAGE = "<|image|>", "<|begin_of_image|>", "<|end_of_image|>"


def n_image_tokens(width: int, height: int) -> int:
    m = synth.PATCH * synth.MERGE
    return (width // m) * (height // m)


@dataclass
class Turn:
    question: str
    answer: str


def conversation_segments(turns: list[Turn], n_image: int) -> list[tuple[str, bool]]:
    """(text, supervised) pieces of one conversation about one photo, as the chat template renders
    it with thinking off; the stop token after each answer is supervised too."""
    segs: list[tuple[str, bool]] = [("[gMASK]<sop>", False)]
    for i, t in enumerate(turns):
        image = BEGIN_IMAGE + IMAGE * n_image + END_IMAGE if i == 0 else ""
        # the <|user|> that opens a follow-up question is the stop token of the answer before it
        segs.append((USER, i > 0))
        segs.append((f"\n{image}{t.question}/nothink{ASSISTANT}\n<think></think>", False))
        segs.append(("\n" + t.answer, True))
    segs.append(("<|endoftext|>", True))
    return segs


def qa_turns(fields: dict, rng: np.random.Generator, n: int) -> list[Turn]:
    keys = list(QUESTIONS)
    # the serial number is what a technician asks most: half the questions are about it
    picks = ["serial_number" if rng.random() < 0.5 else keys[rng.integers(len(keys))] for _ in range(n)]
    return _ask(fields, picks, rng)


def _ask(fields: dict, picks: list[str], rng: np.random.Generator) -> list[Turn]:
    """One turn per picked field: one of its phrasings, answered with the printed value."""
    return [Turn(QUESTIONS[k][rng.integers(len(QUESTIONS[k]))], fields.get(k) or NOT_PRINTED) for k in picks]


# what a photo alone can answer: no prior guesses a serial or model number (stage 2 of the recipe)
UNGUESSABLE = ("serial_number", "model")


def short_turns(fields: dict, rng: np.random.Generator, n: int) -> list[Turn]:
    """Short questions whose answers only the photo holds: serial and model numbers."""
    keys = [k for k in UNGUESSABLE if fields.get(k)] or ["serial_number"]
    return _ask(fields, [keys[rng.integers(len(keys))] for _ in range(n)], rng)


def read_plate_turn(fields: dict) -> Turn:
    return Turn(plate_schema.PROMPT, answer_json(fields))


# --------------------------------------------------------------------------- pixels

MEAN = np.array(synth.PREPROCESSOR_CONFIG["image_mean"], np.float32)
STD = np.array(synth.PREPROCESSOR_CONFIG["image_std"], np.float32)


def patchify(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """HxWx3 uint8 (sides multiples of 28) -> (patches, (t, h, w)) in Glm4vImageProcessor's layout:
    the frame repeated for the 2-frame temporal patch, 14-px patches in 2x2 merge order."""
    p, m, tp = synth.PATCH, synth.MERGE, synth.TEMPORAL_PATCH
    h, w = rgb.shape[:2]
    if h % (p * m) or w % (p * m):
        raise ValueError(f"photo {w}x{h}: sides must be multiples of {p * m}")
    x = ((rgb.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)   # C,H,W
    x = np.repeat(x[None], tp, axis=0)                                          # T,C,H,W
    gh, gw = h // p, w // p
    x = x.reshape(1, tp, 3, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(gh * gw, 3 * tp * p * p)), (1, gh, gw)


# --------------------------------------------------------------------------- glyph targets
# Training-only supervision for the vision tower (an auxiliary head, dropped at release): which
# character is printed where. Every merged image token (28x28 px) has GLYPH_ROWS x GLYPH_COLS slots;
# a slot's class is the printed character whose centre falls in it, NO_GLYPH where none does.

GLYPH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-/.,:%()°"
NO_GLYPH, OTHER_GLYPH = 0, 1                      # OTHER_GLYPH: CJK and any character not listed
GLYPH_CLASSES = 2 + len(GLYPH_CHARS)
GLYPH_ROWS, GLYPH_COLS = 2, 4                     # 14x7 px slots: about one glyph at plate text sizes
_GLYPH_ID = {c: 2 + k for k, c in enumerate(GLYPH_CHARS)}


def glyph_centres(meta: dict) -> list[tuple[str, float, float]]:
    """(character, x, y) in photo pixels for every printed, non-space character whose box the
    generator recorded (field values, labels, maker, title)."""
    h = np.asarray(meta["homography"], float)
    out: list[tuple[str, float, float]] = []
    for b in [*meta["boxes"].values(), *meta.get("label_boxes", {}).values()]:
        text = b["text"]
        if not text or "\n" in text:
            continue
        font = plates.FontRef(b["font"], b["index"]).get(b["size"])
        total = font.getlength(text)
        horiz = b["anchor"][0]
        x0 = b["pos"][0] - {"l": 0.0, "m": total / 2, "r": total}[horiz]
        yc = (b["box"][1] + b["box"][3]) / 2
        pts, chars = [], []
        for k, ch in enumerate(text):
            if ch.isspace():
                continue
            a, z = font.getlength(text[:k]), font.getlength(text[:k + 1])
            pts.append((x0 + (a + z) / 2, yc))
            chars.append(ch)
        if pts:
            out += [(c, float(x), float(y)) for c, (x, y) in zip(chars, plates._apply_h(h, pts))]
    return out


def glyph_targets(meta: dict, size: tuple[int, int] = PHOTO_SIZE) -> np.ndarray:
    """int64 [merged tokens, GLYPH_ROWS * GLYPH_COLS], in the order of :func:`patchify`'s merged tokens."""
    w, h = size
    cell = synth.PATCH * synth.MERGE
    gw, gh = w // cell, h // cell
    out = np.zeros((gh * gw, GLYPH_ROWS * GLYPH_COLS), np.int64)
    for ch, x, y in glyph_centres(meta):
        if not (0 <= x < gw * cell and 0 <= y < gh * cell):
            continue
        tx, ty = int(x // cell), int(y // cell)
        sx, sy = int((x % cell) * GLYPH_COLS // cell), int((y % cell) * GLYPH_ROWS // cell)
        out[ty * gw + tx, sy * GLYPH_COLS + sx] = _GLYPH_ID.get(ch, OTHER_GLYPH)
    return out
