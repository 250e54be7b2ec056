"""Synthetic photographs of equipment nameplates, with their ground truth.

Training and measuring data for the demo model (see docs/demo-model.md): a tiny model of the
GLM-4.6V architecture learns to read these plates, so the demo's answers mean something. Each plate
is drawn from one integer seed: a rating (three- or single-phase motor, pump, fan or gear motor) whose
numbers are consistent (P ≈ √3·V·I·PF·η, speed below the synchronous speed, so ``runtime.tasks.plate.check``
finds nothing to warn about), a plate (brushed metal, painted steel or sticker) with border, rivets,
manufacturer and labelled fields in English, Chinese or both, then a "photograph" of it: perspective
and rotation, background clutter and the plate's shadow, uneven light and glare, blur, sensor noise and
JPEG compression, each with a seeded strength scaled by one ``difficulty`` knob (0 = the flat plate,
pasted unwarped, JPEG quality 95).

The ground truth uses the keys of the runtime's read-plate schema (``runtime.tasks.plate.FIELDS`` plus
``other``), with values exactly as printed (units included) and ``None`` for fields not on the plate.

    python -m convert.synthetic.plates OUT_DIR --count 1000 --seed 0 [--size 448x336] [--lang any] [--difficulty 0.6]

writes ``plate-000000.jpg``… and ``plates.jsonl`` (one line per image: file, seed, fields, meta); every
file is written to ``*.part``, fsynced and renamed, the JSONL last, so its presence means a complete set.

Only Pillow and numpy are used. Fonts are Debian's, found by path: DejaVu (fonts-dejavu-core) for Latin
text, Noto Sans CJK (fonts-noto-cjk) or WenQuanYi Micro Hei (fonts-wqy-microhei) for Chinese; without a
CJK font every plate is English and a note says so. The same seed gives a byte-identical JPEG with the
same Pillow, libjpeg and fonts.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from runtime.tasks.plate import FIELDS

from convert.synthetic.synth import _fsync_dir
from runtime.common.files import atomic_write_bytes

FIELD_KEYS: tuple[str, ...] = tuple(k for k, _ in FIELDS)
LANGS = ("en", "zh", "mixed")
DEFAULT_SIZE = (448, 336)

# --------------------------------------------------------------------------- fonts

_DEJAVU = "/usr/share/fonts/truetype/dejavu/"
# role -> candidate paths, first found wins (Condensed is in fonts-dejavu-extra, so it falls back)
LATIN_FONTS: dict[str, tuple[str, ...]] = {
    "sans": (_DEJAVU + "DejaVuSans.ttf",),
    "sans_bold": (_DEJAVU + "DejaVuSans-Bold.ttf", _DEJAVU + "DejaVuSans.ttf"),
    "condensed": (_DEJAVU + "DejaVuSansCondensed.ttf", _DEJAVU + "DejaVuSans.ttf"),
    "condensed_bold": (_DEJAVU + "DejaVuSansCondensed-Bold.ttf", _DEJAVU + "DejaVuSans-Bold.ttf"),
    "mono": (_DEJAVU + "DejaVuSansMono.ttf", _DEJAVU + "DejaVuSans.ttf"),
    "mono_bold": (_DEJAVU + "DejaVuSansMono-Bold.ttf", _DEJAVU + "DejaVuSansMono.ttf"),
}
# (path, family to pick inside a .ttc collection or None for the first face)
CJK_FONTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "cjk": (("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK SC"),
            ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", None),
            ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", None)),
    "cjk_bold": (("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", "Noto Sans CJK SC"),
                 ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK SC"),
                 ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", None),
                 ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", None)),
}
CJK_MISSING_NOTE = ("convert.synthetic.plates: no CJK font found (install fonts-noto-cjk or fonts-wqy-microhei); "
                    "plates are English only")


@dataclass(frozen=True)
class FontRef:
    path: str | None  # None: Pillow's built-in scalable font (no DejaVu on this machine)
    index: int = 0

    def get(self, size: int) -> ImageFont.FreeTypeFont:
        return _load_font(self.path, self.index, max(4, int(size)))


@functools.lru_cache(maxsize=1024)
def _load_font(path: str | None, index: int, size: int):
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size, index=index)


def _ttc_index(path: str, family: str | None) -> int | None:
    if family is None:
        return 0
    for i in range(32):
        try:
            if ImageFont.truetype(path, 12, index=i).getname()[0] == family:
                return i
        except OSError:
            break
    return None


@functools.lru_cache(maxsize=1)
def fonts() -> dict[str, FontRef | None]:
    """role -> FontRef; the CJK roles are None when no CJK font is installed."""
    out: dict[str, FontRef | None] = {}
    for role, paths in LATIN_FONTS.items():
        found = next((p for p in paths if os.path.isfile(p)), None)
        out[role] = FontRef(found)
    for role, cands in CJK_FONTS.items():
        out[role] = None
        for path, family in cands:
            if os.path.isfile(path) and (idx := _ttc_index(path, family)) is not None:
                out[role] = FontRef(path, idx)
                break
    return out


def has_cjk() -> bool:
    return fonts()["cjk"] is not None


def _is_cjk(text: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text)


def _font(role: str, text: str) -> FontRef:
    if _is_cjk(text):
        return fonts()["cjk_bold" if "bold" in role else "cjk"]
    return fonts()[role]


# --------------------------------------------------------------------------- value tables

# Fictional makers: no real trademark ends up in the training data.
MAKERS_EN = ("NORDWERK", "Kestrel Electric", "ORION DRIVES", "Tatra Elektro", "Alvar Motors",
             "MERIDIAN POWER", "Hanshin Motor Co.", "BRAVA PUMPS", "Vantec", "ELMA Antriebe",
             "Corvus Industrial", "Delmar Electric", "RHEINMOT", "Sakura Kiden", "Polaris Motion",
             "Ventura Fans", "GEARON", "Atlas Rotating", "Lindqvist AB", "VOLTARA")
MAKERS_ZH = ("华达电机股份有限公司", "江淮电机有限公司", "东岳机电制造有限公司", "金陵电机厂",
             "恒力泵业有限公司", "新华电机集团", "天成风机有限公司", "长江减速机厂", "南方动力机械有限公司",
             "北辰电气股份有限公司", "宏远电机有限公司", "中原微电机厂")

# kind -> machine family: phase count, share, ratings allowed, the title printed as "type",
# extra "other" pairs it always has, and the curve parameters of its efficiency / PF / slip.
@dataclass(frozen=True)
class Kind:
    weight: float
    phases: int
    max_kw: float
    min_kw: float
    types_en: tuple[str, ...]
    types_zh: tuple[str, ...]
    required_other: tuple[str, ...] = ()
    loss: tuple[float, float] = (16.2, 0.267)      # losses % = a · P_kW^-b (IE3-like at factor 1)
    pf: tuple[float, float, float] = (0.88, 0.11, 0.35)  # PF = a - b · P_kW^-c
    slip: tuple[float, float] = (0.06, 0.3)        # slip = a · P_kW^-b
    poles: dict = field(default_factory=lambda: {2: 0.3, 4: 0.45, 6: 0.18, 8: 0.07})


KINDS: dict[str, Kind] = {
    "motor3": Kind(0.5, 3, 110, 0.37, ("3~ Induction motor", "THREE PHASE INDUCTION MOTOR", "3~ Mot.",
                                      "AC MOTOR", "Asynchronous motor"),
                   ("三相异步电动机", "高效三相异步电动机", "三相异步电机")),
    "motor1": Kind(0.12, 1, 2.2, 0.18, ("1~ Capacitor motor", "SINGLE PHASE MOTOR", "1~ Mot."),
                   ("单相电容运转异步电动机", "单相异步电动机"),
                   loss=(27.0, 0.2), pf=(0.97, 0.04, 0.3), slip=(0.07, 0.25), poles={2: 0.5, 4: 0.5}),
    "pump": Kind(0.16, 3, 75, 0.55, ("Centrifugal pump", "PUMP MOTOR", "3~ Pump"),
                 ("离心泵", "管道离心泵", "立式多级泵"), ("flow", "head"), poles={2: 0.7, 4: 0.3}),
    "fan": Kind(0.12, 3, 30, 0.25, ("Axial fan", "FAN MOTOR", "Centrifugal fan"),
                ("轴流风机", "离心风机"), ("airflow",), poles={2: 0.2, 4: 0.5, 6: 0.3}),
    "gearmotor": Kind(0.1, 3, 15, 0.18, ("Helical gear motor", "GEARED MOTOR", "3~ Gear motor"),
                      ("斜齿轮减速电机", "齿轮减速电机"), ("ratio", "output_speed"),
                      poles={4: 0.8, 6: 0.2}),
}

# market -> frequency, power unit and ratings, voltage plates (text, voltages the currents are printed
# for, connection), speed units, standards.  Dual-voltage plates print one current per voltage.
MARKETS: dict[str, dict] = {
    "iec50": dict(freq=50, unit="kW", std=("IEC 60034-1", "IEC/EN 60034-1", "EN 60034", "IEC 60034-30-1"),
                  v3=(("400 V", (400,), "Δ"), ("230/400 V", (230, 400), "Δ/Y"), ("400/690 V", (400, 690), "Δ/Y"),
                      ("380-420 V", (380,), "Y"), ("415 V", (415,), "Δ"), ("690 V", (690,), "Y")),
                  v1=(("230 V", (230,), None), ("220-240 V", (220,), None), ("240 V", (240,), None)),
                  speed=("rpm", "r/min", "min-1", "1/min")),
    "iec60": dict(freq=60, unit="kW", std=("IEC 60034-1", "IEC 60034-30-1"),
                  v3=(("460 V", (460,), "Y"), ("440 V", (440,), "Δ"), ("380 V", (380,), "Δ"),
                      ("220/380 V", (220, 380), "Δ/Y")),
                  v1=(("220 V", (220,), None), ("230 V", (230,), None)),
                  speed=("rpm", "r/min", "min-1")),
    "nema60": dict(freq=60, unit="HP", std=("NEMA MG 1", "NEMA MG1-12"),
                   v3=(("460 V", (460,), None), ("230/460 V", (230, 460), None), ("575 V", (575,), None),
                       ("208 V", (208,), None)),
                   v1=(("115/230 V", (115, 230), None), ("230 V", (230,), None), ("115 V", (115,), None)),
                   speed=("RPM", "rpm")),
    "cn50": dict(freq=50, unit="kW", std=("GB/T 755-2019", "GB 18613-2020", "JB/T 10391-2008", "GB/T 755"),
                 v3=(("380 V", (380,), "Δ"), ("380 V", (380,), "Y"), ("380/660 V", (380, 660), "Δ/Y"),
                     ("400 V", (400,), "Δ")),
                 v1=(("220 V", (220,), None),),
                 speed=("r/min", "r/min", "rpm")),
}
MARKET_BY_LANG = {"en": {"iec50": 0.6, "iec60": 0.15, "nema60": 0.25}, "zh": {"cn50": 1.0},
                  "mixed": {"cn50": 0.7, "iec50": 0.3}}
KW_RATINGS = (0.18, 0.25, 0.37, 0.55, 0.75, 1.1, 1.5, 2.2, 3, 4, 5.5, 7.5, 11, 15, 18.5, 22, 30, 37, 45,
              55, 75, 90, 110)
HP_RATINGS = (0.25, 0.33, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 125, 150)
HP_W = 745.7
# IEC frame by rated kW (4-pole); NEMA frames by HP
IEC_FRAMES = ((0.25, "63M"), (0.37, "71M"), (0.75, "80M"), (1.1, "90S"), (1.5, "90L"), (3, "100L"),
              (4, "112M"), (5.5, "132S"), (7.5, "132M"), (11, "160M"), (15, "160L"), (18.5, "180M"),
              (22, "180L"), (30, "200L"), (37, "225S"), (45, "225M"), (55, "250M"), (75, "280S"),
              (90, "280M"), (1e9, "315S"))
NEMA_FRAMES = ((0.5, "56"), (1, "143T"), (2, "145T"), (3, "182T"), (5, "184T"), (7.5, "213T"), (10, "215T"),
               (15, "254T"), (20, "256T"), (25, "284T"), (30, "286T"), (40, "324T"), (50, "326T"),
               (60, "364T"), (75, "365T"), (100, "405T"), (1e9, "444T"))
EFF_CLASSES = {"IE2": 1.2, "IE3": 1.0, "IE4": 0.82}  # loss factor against the IE3-like curve
SERIAL_PATTERNS = ("##########", "@@########", "{yy}######-##", "####-######", "@##@######",
                   "{yyyy}{mm}####", "@@@{yy}#####", "########/###", "{yy}@#######", "#######")
SERIAL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q, as most makers do
MODEL_PATTERNS = {  # {series} {frame} {poles} {kwcode}
    "en": ("{series} {frame}-{poles}", "{series}{frame}{poles}", "{series}-{kwcode}-{poles}P",
           "{series} {frame} {poles}P", "{series}{kwcode}{poles}"),
    "zh": ("{zseries}-{frame}-{poles}", "{zseries}{frame}-{poles}", "{zseries}-{frame}-{poles}W"),
}
SERIES_EN = ("AMX", "KTR", "VL", "HM2", "QE3", "NX", "TMA", "RDX", "EMK", "LS", "PV", "DRX", "GMA")
SERIES_ZH = {"motor3": ("Y2", "YE2", "YE3", "YE4", "YX3"), "motor1": ("YL", "YC", "YY"),
             "pump": ("ISG", "CDL", "QJ"), "fan": ("SF", "T35", "FZY"), "gearmotor": ("R", "K", "F")}
YEAR_FORMATS = {"en": ("{yyyy}", "{yyyy}", "{mm}/{yyyy}", "{yyyy}-{mm}", "{mm}.{yyyy}"),
                "zh": ("{yyyy}", "{yyyy}.{mm}", "{yyyy}-{mm}", "{yyyy}.{mm}.{dd}")}
YEARS = (1998, 2024)  # fixed so the same seed gives the same plate in any year
IP_CODES = ("IP55", "IP55", "IP55", "IP54", "IP56", "IP65", "IP66", "IP44", "IP23")
INSULATION = ("F", "F", "F", "B", "H", "Cl. F", "Class F", "F (B)")
DUTIES = ("S1", "S1", "S1", "S2 30 min", "S3 40%", "S6 60%")

# Field labels (en / zh variants); "mixed" prints "zh en".
LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "model": {"en": ("Model", "Mod.", "Cat. No.", "Model No."), "zh": ("型号",)},
    "serial_number": {"en": ("Serial No.", "S/N", "Ser. No.", "SN", "No."), "zh": ("编号", "出厂编号", "产品编号")},
    "year": {"en": ("Year", "Date", "Mfg. date", "Built"), "zh": ("出厂日期", "生产日期")},
    "rated_voltage": {"en": ("Voltage", "Rated voltage", "V", "U", "Volts"), "zh": ("额定电压", "电压")},
    "current": {"en": ("Current", "Rated current", "A", "I", "Amps"), "zh": ("额定电流", "电流")},
    "power": {"en": ("Power", "Rated power", "Output", "P"), "zh": ("额定功率", "功率")},
    "frequency": {"en": ("Frequency", "Freq.", "f"), "zh": ("频率", "额定频率")},
    "phases": {"en": ("Phases", "Phase", "Ph."), "zh": ("相数",)},
    "speed": {"en": ("Speed", "Rated speed", "n", "RPM"), "zh": ("转速", "额定转速")},
    "power_factor": {"en": ("Power factor", "cos φ", "PF", "P.F."), "zh": ("功率因数",)},
    "efficiency": {"en": ("Efficiency", "Eff.", "η"), "zh": ("效率",)},
    "ip_rating": {"en": ("Protection", "IP", "Enclosure", "Degree of prot."), "zh": ("防护等级",)},
    "insulation_class": {"en": ("Insulation class", "Ins. Cl.", "Ins. class", "Cl."), "zh": ("绝缘等级",)},
    "duty": {"en": ("Duty", "Duty type"), "zh": ("工作制", "定额")},
    "standard": {"en": ("Standard", "Std."), "zh": ("标准", "标准编号")},
}
# "other" pairs: labels and a value maker over the machine's data (m)
OTHER: dict[str, dict] = {
    "weight": {"en": ("Weight", "Mass"), "zh": ("重量",), "value": lambda m, r: f"{m['weight']} kg"},
    "ambient": {"en": ("Amb.", "Ambient"), "zh": ("环境温度",),
                "value": lambda m, r: f"{_pick(r, ('40', '40', '45', '50'))} °C"},
    "ie_class": {"en": ("IE class", "Eff. class"), "zh": ("能效等级",), "value": lambda m, r: m["ie"]},
    "connection": {"en": ("Connection", "Conn."), "zh": ("接法",), "value": lambda m, r: m["connection"]},
    "bearing": {"en": ("Bearing DE", "DE bearing"), "zh": ("轴承",), "value": lambda m, r: m["bearing"]},
    "cooling": {"en": ("Cooling",), "zh": ("冷却方式",), "value": lambda m, r: _pick(r, ("IC411", "IC411", "IC416"))},
    "mounting": {"en": ("Mounting", "IM"), "zh": ("安装方式",),
                 "value": lambda m, r: _pick(r, ("IM B3", "IM B5", "IM B35", "IM V1"))},
    "altitude": {"en": ("Altitude",), "zh": ("海拔",), "value": lambda m, r: f"{_pick(r, ('1000', '1000', '2000'))} m"},
    "noise": {"en": ("Noise",), "zh": ("噪声",), "value": lambda m, r: f"{m['noise']} dB(A)"},
    "flow": {"en": ("Flow", "Q"), "zh": ("流量",), "value": lambda m, r: f"{m['flow']} m³/h"},
    "head": {"en": ("Head", "H"), "zh": ("扬程",), "value": lambda m, r: f"{m['head']} m"},
    "airflow": {"en": ("Airflow", "Air volume"), "zh": ("风量",), "value": lambda m, r: f"{m['airflow']} m³/h"},
    "ratio": {"en": ("Ratio", "i"), "zh": ("减速比",), "value": lambda m, r: m["ratio"]},
    "output_speed": {"en": ("Output speed", "n2"), "zh": ("输出转速",), "value": lambda m, r: m["n2"]},
    "capacitor": {"en": ("Capacitor", "Cap."), "zh": ("电容",), "value": lambda m, r: m["capacitor"]},
}
OPTIONAL_OTHER = ("weight", "ambient", "ie_class", "connection", "bearing", "cooling", "mounting", "altitude", "noise")
MAX_OTHER = 4
# optional schema fields: probability of being printed (serial number, model and the ratings always are)
OPTIONAL_FIELDS = {"type": 0.8, "year": 0.7, "phases": 0.35, "power_factor": 0.7, "efficiency": 0.6,
                   "ip_rating": 0.85, "insulation_class": 0.75, "duty": 0.6, "standard": 0.5}
ALWAYS_FIELDS = ("manufacturer", "model", "serial_number", "rated_voltage", "current", "power", "frequency",
                 "speed")
# order of the labelled cells on the plate (manufacturer and type are in the header)
CELL_ORDER = ("model", "serial_number", "power", "rated_voltage", "current", "frequency", "speed", "phases",
              "power_factor", "efficiency", "ip_rating", "insulation_class", "duty", "year", "standard")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _pick_weighted(rng: np.random.Generator, table: dict):
    keys = list(table)
    p = np.array([table[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _step(table, x):
    return next(v for lim, v in table if x <= lim)


def _fmt_num(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _current_text(i: float) -> str:
    return _fmt_num(i, 2 if i < 10 else 1 if i < 100 else 0)


def _sig(x: float, digits: int = 2) -> str:
    """A rounded, printable figure: 27.4 -> '27', 1234 -> '1200'."""
    if x <= 0:
        return "0"
    mag = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return f"{round(x / mag) * mag:g}"


def _pattern(rng: np.random.Generator, pat: str, subs: dict) -> str:
    for k, v in subs.items():
        pat = pat.replace("{" + k + "}", v)
    return "".join(str(rng.integers(10)) if c == "#" else _pick(rng, SERIAL_LETTERS) if c == "@" else c for c in pat)


@dataclass
class Content:
    """What is printed on the plate: the ground truth plus how it is labelled."""
    lang: str
    kind: str
    market: str
    fields: dict
    cells: list[tuple[str, str, str]]   # (field key or "other", label as printed, value as printed)


def make_fields(seed: int, lang: str = "en") -> Content:
    """The plate's content (values, labels, which fields are printed) from the seed alone: the same
    seed gives the same content whatever the image size or difficulty."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, not {lang!r}")
    rng = np.random.default_rng([seed, 1])
    kind_name = _pick_weighted(rng, {k: v.weight for k, v in KINDS.items()})
    kind = KINDS[kind_name]
    market_name = _pick_weighted(rng, MARKET_BY_LANG[lang])
    mk = MARKETS[market_name]
    freq = mk["freq"]
    poles = int(_pick_weighted(rng, kind.poles))
    if mk["unit"] == "HP":
        ratings = [h for h in HP_RATINGS if kind.min_kw <= h * HP_W / 1000 <= kind.max_kw]
        rating = _pick(rng, ratings)
        p_w = rating * HP_W
        power_text = f"{rating:g} HP"
    else:
        rating = _pick(rng, [k for k in KW_RATINGS if kind.min_kw <= k <= kind.max_kw])
        p_w = rating * 1000
        power_text = f"{rating:g} kW"
    p_kw = p_w / 1000
    ie = _pick(rng, tuple(EFF_CLASSES)) if kind.phases == 3 else "IE2"
    loss = kind.loss[0] * p_kw ** -kind.loss[1] * EFF_CLASSES[ie] * rng.uniform(0.92, 1.08)
    eff = round(100 - loss, 1)
    pf_adj = {2: 0.03, 4: 0.0, 6: -0.05, 8: -0.09}[poles] if kind.phases == 3 else 0.0
    pf = round(min(0.95, max(0.6, kind.pf[0] - kind.pf[1] * p_kw ** -kind.pf[2] + pf_adj
                             + rng.uniform(-0.015, 0.015))), 2)
    slip = kind.slip[0] * p_kw ** -kind.slip[1] * rng.uniform(0.85, 1.15)
    n_sync = 120 * freq / poles
    speed = n_sync * (1 - slip)
    speed = int(round(speed / 5) * 5) if rng.random() < 0.6 else int(round(speed))
    speed = min(speed, int(n_sync) - 1)
    vtext, volts, conn = _pick(rng, mk["v3"] if kind.phases == 3 else mk["v1"])
    k = math.sqrt(3) if kind.phases == 3 else 1.0
    currents = [p_w / (k * v * pf * eff / 100) for v in volts]
    current_text = "/".join(_current_text(i) for i in currents) + " A"
    year = int(rng.integers(YEARS[0], YEARS[1] + 1))
    dates = {"yyyy": str(year), "yy": f"{year % 100:02d}", "mm": f"{int(rng.integers(1, 13)):02d}",
             "dd": f"{int(rng.integers(1, 29)):02d}"}
    frame = _step(NEMA_FRAMES, rating) if mk["unit"] == "HP" else _step(IEC_FRAMES, rating)
    zh_model = lang != "en" and rng.random() < 0.8
    model = _pattern(rng, _pick(rng, MODEL_PATTERNS["zh" if zh_model else "en"]), {
        "series": _pick(rng, SERIES_EN) + _pick(rng, ("", "", "A", "B", "E")),
        "zseries": _pick(rng, SERIES_ZH[kind_name]), "frame": frame, "poles": str(poles),
        "kwcode": f"{int(round(p_kw * 10)):03d}"})
    serial = _pattern(rng, _pick(rng, SERIAL_PATTERNS), dates)
    zh_text = lang in ("zh", "mixed")
    maker = _pick(rng, MAKERS_ZH if zh_text and rng.random() < 0.75 else MAKERS_EN)
    title = _pick(rng, kind.types_zh if zh_text and rng.random() < 0.8 else kind.types_en)
    machine = {
        "weight": _sig(6 + 7.5 * p_kw ** 0.95 * rng.uniform(0.85, 1.2)), "ie": ie,
        "connection": conn or "Y", "noise": int(55 + 6 * math.log10(1 + p_kw * 10) + rng.integers(0, 6)),
        "bearing": (f"6{_pick(rng, ('2', '3'))}{int(min(24, 2 + 3 * p_kw ** 0.45)):02d}"
                    f"-{_pick(rng, ('2Z', '2RS', 'ZZ', 'C3'))}"),
        "flow": _sig(p_kw * rng.uniform(3, 8)), "head": _sig(p_kw ** 0.4 * rng.uniform(10, 25)),
        "airflow": _sig(p_kw * rng.uniform(1500, 4000)),
        "ratio": f"{rng.uniform(3, 60):.2f}", "capacitor": f"{_sig(40 * p_kw ** 0.7 + 6)} µF / 450 V",
    }
    machine["n2"] = f"{speed / float(machine['ratio']):.0f} {'r/min' if zh_text else 'rpm'}"
    year_text = _pattern(rng, _pick(rng, YEAR_FORMATS["zh" if zh_text else "en"]), dates)
    values = {
        "manufacturer": maker, "model": model, "serial_number": serial, "type": title, "year": year_text,
        "rated_voltage": vtext, "current": current_text, "power": power_text, "frequency": f"{freq} Hz",
        "phases": _pick(rng, ("3", "3~", "3 Ph")) if kind.phases == 3 else _pick(rng, ("1", "1~", "1 Ph")),
        "speed": f"{speed} {_pick(rng, mk['speed'])}", "power_factor": f"{pf:.2f}",
        "efficiency": _pick(rng, (f"{eff:.1f} %", f"{eff:.1f}%")),
        "ip_rating": _pick(rng, IP_CODES), "insulation_class": _pick(rng, INSULATION),
        "duty": _pick(rng, DUTIES), "standard": _pick(rng, mk["std"]),
    }
    printed = set(ALWAYS_FIELDS) | {k for k, p in OPTIONAL_FIELDS.items() if rng.random() < p}
    # runtime.tasks.plate checks P against V·I·PF·η with 0.85 and 90 % when those are not printed:
    # a plate whose real PF·η is far from that prints them (as real small motors' plates do)
    if not 0.8 <= pf * eff / 100 / (0.85 * 0.9) <= 1.2:
        printed |= {"power_factor", "efficiency"}
    if kind.phases == 1 and "1~" not in (title if "type" in printed else ""):
        printed.add("phases")  # otherwise the checker assumes three phases
    fields = {k: (values[k] if k in printed else None) for k in FIELD_KEYS}

    def label(table: dict[str, tuple[str, ...]]) -> str:
        en, zh = _pick(rng, table["en"]), _pick(rng, table["zh"])
        return {"en": en, "zh": zh, "mixed": f"{zh} {en}"}[lang]

    cells = [(k, label(LABELS[k]), fields[k]) for k in CELL_ORDER if fields[k] is not None]
    extra = [o for o in OPTIONAL_OTHER if not (o == "ie_class" and kind.phases == 1)
             and not (o == "connection" and conn is None)]
    n_extra = int(rng.integers(0, 3))
    chosen = list(kind.required_other) + [extra[i] for i in sorted(rng.choice(len(extra), n_extra, replace=False))]
    if kind_name == "motor1" and rng.random() < 0.6:
        chosen.append("capacitor")
    other = []
    for name in chosen[:MAX_OTHER]:
        spec = OTHER[name]
        lab, val = label(spec), spec["value"](machine, rng)
        other.append({"name": lab, "value": val})
        cells.append(("other", lab, val))
    fields["other"] = other
    return Content(lang, kind_name, market_name, fields, cells)


# --------------------------------------------------------------------------- looks

# plate material -> base colours, texture, text colours, header band colours, rivets, corner radius
STYLES: dict[str, dict] = {
    "metal": dict(weight=0.45, base=((196, 198, 200), (176, 178, 180), (206, 200, 184), (160, 164, 168)),
                  texture="brushed", ink=((22, 22, 26), (40, 34, 30)), band=((25, 25, 30), (30, 40, 80)),
                  rivets=True, radius=(0.0, 0.03)),
    "painted": dict(weight=0.25, base=((30, 70, 140), (35, 95, 60), (70, 72, 78), (228, 222, 200), (150, 30, 28)),
                    texture="paint", ink=None, band=None, rivets=True, radius=(0.0, 0.04)),
    "sticker": dict(weight=0.30, base=((246, 246, 242), (232, 234, 236), (250, 236, 150), (214, 216, 220)),
                    texture="flat", ink=((12, 12, 12), (20, 20, 60)), band=((200, 30, 35), (20, 70, 150), (20, 110, 60),
                                                                         (15, 15, 15)),
                    rivets=False, radius=(0.02, 0.07)),
}
# layout -> header kinds, label placement (inline / above the value), column counts tried, ruled cells
LAYOUTS: dict[str, dict] = {
    "grid": dict(weight=0.35, header=("band", "plain"), labels="inline", columns=(2, 3), ruled=True),
    "list": dict(weight=0.3, header=("plain", "boxed", "band"), labels="inline", columns=(1, 2), ruled=False),
    "stacked": dict(weight=0.35, header=("band", "boxed", "plain"), labels="above", columns=(3, 4), ruled=True),
}
TYPEFACES = (("sans", "sans_bold"), ("condensed", "condensed_bold"), ("sans", "sans"), ("condensed", "sans_bold"))
SERIAL_FACES = ("same", "same", "mono", "mono_bold")

# photo effects: name -> (probability, low, high) of a strength in 0..1, scaled by the difficulty
EFFECTS: dict[str, tuple[float, float, float]] = {
    "rotation": (0.9, 0.0, 1.0),      # up to ±MAX_ROTATION_DEG
    "perspective": (0.9, 0.0, 1.0),   # corner displacement up to MAX_PERSPECTIVE of the plate size
    "scale": (1.0, 0.0, 1.0),         # plate smaller in the frame, by up to MAX_SHRINK (legibility floor)
    "light": (0.8, 0.2, 1.0),         # uneven illumination, vignette
    "glare": (0.5, 0.2, 1.0),         # specular highlight
    "shadow": (0.6, 0.3, 1.0),        # the plate's cast shadow, a darker patch across it
    "blur": (0.7, 0.0, 1.0),          # Gaussian defocus, radius up to MAX_BLUR px at 448 wide
    "motion": (0.2, 0.3, 1.0),        # short linear motion blur
    "noise": (0.9, 0.1, 1.0),         # sensor noise up to MAX_NOISE (8-bit σ)
    "color": (0.8, 0.0, 1.0),         # white balance / exposure
    "jpeg": (1.0, 0.0, 1.0),          # quality 95 -> 95-JPEG_SPAN
}
MAX_ROTATION_DEG, MAX_PERSPECTIVE, MAX_SHRINK, FILL = 12.0, 0.10, 0.35, 0.94
# the smallest printed field's font size, in photo pixels at 448x336, that no effect may go below:
# DejaVu's digits are then ~7 px tall, half a 14-px vision patch
MIN_TEXT_PX = 10.0
MAX_BLUR, MAX_NOISE, JPEG_SPAN, MAX_GLARE = 1.3, 9.0, 55, 0.55
BACKGROUNDS = ((120, 122, 118), (70, 90, 70), (40, 60, 95), (60, 58, 55), (150, 140, 120), (35, 35, 38),
               (180, 120, 40), (95, 100, 110))
CLUTTER = {"rect": 0.35, "line": 0.3, "ellipse": 0.2, "bolt": 0.15}


@dataclass
class Plate:
    image: Image.Image      # the decoded JPEG, RGB, exactly `size`
    jpeg: bytes             # what the CLI writes (the image above is decoded from it)
    fields: dict            # ground truth: runtime.tasks.plate FIELDS keys + "other"
    meta: dict              # seed, lang, kind, style, layout, effect strengths, text boxes…


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _texture(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    """A single-channel float32 delta added to the plate's base colour."""
    fine = rng.standard_normal((h, w), dtype=np.float32)
    if kind == "brushed":
        streak = rng.standard_normal((h, max(2, w // 40)), dtype=np.float32)
        streak = np.asarray(Image.fromarray(streak).resize((w, h), Image.Resampling.BILINEAR))
        rows = rng.standard_normal((h, 1), dtype=np.float32)
        x = np.linspace(0, math.pi * rng.uniform(1, 3), w, dtype=np.float32)
        return 6 * streak + 3 * rows + 2.5 * fine + 10 * np.cos(x + rng.uniform(0, 6))[None, :]
    if kind == "paint":
        mottle = rng.standard_normal((max(2, h // 24), max(2, w // 24)), dtype=np.float32)
        mottle = np.asarray(Image.fromarray(mottle).resize((w, h), Image.Resampling.BICUBIC))
        return 4 * mottle + 2.5 * fine
    return 1.5 * fine


@functools.lru_cache(maxsize=65536)
def _unit_width(font: FontRef, text: str) -> float:
    """Advance width of `text` per pixel of font size."""
    return font.get(100).getlength(text) / 100


def _fit_size(font: FontRef, texts: list[str], width: float, cap: float) -> int:
    """Largest integer size ≤ cap at which every text fits `width`."""
    if not texts:
        return int(cap)
    widest = max(_unit_width(font, t) for t in texts)
    return max(4, int(min(cap, width / max(widest, 1e-6))))


def _render_plate(content: Content, rng: np.random.Generator, pw: int, ph: int, style: str | None = None
                  ) -> tuple[Image.Image, dict]:
    """The flat plate, RGBA (alpha 0 outside the rounded corners), and its text boxes (plate pixels)."""
    style_name = _pick_weighted(rng, {k: v["weight"] for k, v in STYLES.items()})
    style_name = style or style_name  # drawn either way: a forced style leaves the rest of the stream alone
    st = STYLES[style_name]
    layout_name = _pick_weighted(rng, {k: v["weight"] for k, v in LAYOUTS.items()})
    lay = LAYOUTS[layout_name]
    base = np.array(_pick(rng, st["base"]), np.float32)
    if st["ink"] is None:  # painted: white or black letters against the paint
        ink = (245, 245, 240) if _luma(base) < 140 else (18, 18, 18)
    else:
        ink = _pick(rng, st["ink"])
    arr = base[None, None, :] + _texture(rng, st["texture"], pw, ph)[:, :, None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    s = min(pw, ph)
    radius = int(s * rng.uniform(*st["radius"]))
    boxes: dict[str, dict] = {}
    # border, and the rivets' places in the corners (drawn last, over any header band)
    bw = max(1, int(s * rng.uniform(0.006, 0.014)))
    inset = int(s * rng.uniform(0.02, 0.035))
    d.rounded_rectangle((inset, inset, pw - 1 - inset, ph - 1 - inset), radius=max(0, radius - inset),
                        outline=ink, width=bw)
    rivet_r = max(2, int(s * rng.uniform(0.018, 0.026)))
    rivet_c = inset + bw + rivet_r + max(1, int(s * 0.01))
    margin = int(rivet_c + rivet_r + s * 0.012) if st["rivets"] else int(inset + bw + s * 0.03)
    x0, y0, x1, y1 = margin, margin, pw - margin, ph - margin
    face, face_bold = _pick(rng, TYPEFACES)
    maker, title = content.fields["manufacturer"], content.fields["type"]
    header = _pick(rng, lay["header"])
    header_h = (y1 - y0) * rng.uniform(0.15, 0.2)
    # header: manufacturer (+ the type title on the right, or on its own line below)
    title_inline = title is not None and rng.random() < 0.5
    band_ink = ink
    if header == "band":
        band = _pick(rng, st["band"]) if st["band"] else tuple(int(v * 0.5) for v in ink)
        d.rectangle((inset + bw, inset + bw, pw - 1 - inset - bw, y0 + header_h), fill=band)
        band_ink = (250, 250, 250) if _luma(band) < 140 else (15, 15, 15)
    hx0 = x0 + (header_h * 0.9 if header == "boxed" else 0)
    if header == "boxed":  # a simple logo mark before the name
        m = header_h * 0.7
        d.ellipse((x0, y0 + header_h * 0.15, x0 + m, y0 + header_h * 0.15 + m), outline=band_ink,
                  width=max(1, int(m / 8)))
    name_w = (x1 - hx0) * (0.55 if title_inline else 1.0)
    fb = _font(face_bold, maker)
    fs = _fit_size(fb, [maker], name_w * 0.95, header_h * 0.7)
    pos = (hx0, y0 + header_h / 2)
    d.text(pos, maker, font=fb.get(fs), fill=band_ink, anchor="lm")
    boxes["manufacturer"] = _box(d, pos, maker, fb, fs)
    body_top = y0 + header_h + (y1 - y0) * 0.03
    if title is not None:
        ft = _font(face_bold, title)
        if title_inline:
            fs = _fit_size(ft, [title], (x1 - x0) * 0.4, header_h * 0.45)
            pos = (x1, y0 + header_h / 2)
            d.text(pos, title, font=ft.get(fs), fill=band_ink, anchor="rm")
        else:
            th = (y1 - y0) * 0.1
            fs = _fit_size(ft, [title], x1 - x0, th * 0.75)
            pos = ((x0 + x1) / 2, body_top + th / 2)
            d.text(pos, title, font=ft.get(fs), fill=ink, anchor="mm")
            body_top += th
        boxes["type"] = _box(d, pos, title, ft, fs, anchor="rm" if title_inline else "mm")
    # body: a grid of cells
    cells = content.cells
    serial_face = _pick(rng, SERIAL_FACES)
    lab_role, val_role = face, (face_bold if rng.random() < 0.5 else face)
    best = None
    gap = 0.7  # label-value gap, in font sizes
    lab_scale = rng.uniform(0.72, 0.82) if content.lang == "mixed" else rng.uniform(0.8, 1.0)  # label / value size

    def _lab_scale(key: str) -> float:  # "other" names are ground truth: as large as the values
        return 1.0 if key == "other" else lab_scale
    for ncol in lay["columns"]:
        nrow = math.ceil(len(cells) / ncol)
        cw, chh = (x1 - x0) / ncol, (y1 - body_top) / nrow
        if lay["labels"] == "inline":  # one label column and one value column per grid column
            lab_w = max(_lab_scale(k) * _unit_width(_font(lab_role, lab), lab) for k, lab, _ in cells)
            val_w = max(_unit_width(_font(val_role, val), val) for _, _, val in cells)
            size = int(min(chh * 0.62, cw * 0.94 / (lab_w + gap + val_w)))
        else:
            size = min(_fit_size(_font(val_role, v), [v], cw * 0.92, chh * 0.44) for _, _, v in cells)
        if best is None or size > best[0]:
            best = (size, ncol, nrow, cw, chh)
    size, ncol, nrow, cw, chh = best
    line_w = max(1, bw // 2)
    if lay["ruled"]:
        for r_ in range(nrow + 1):
            yy = body_top + r_ * chh
            d.line((x0, yy, x1, yy), fill=ink, width=line_w)
        for c_ in range(1, ncol):
            xx = x0 + c_ * cw
            d.line((xx, body_top, xx, y1), fill=ink, width=line_w)
    pad = cw * 0.03
    other_i = 0
    labels: dict[str, dict] = {}
    if lay["labels"] == "inline":
        val_x = pad + size * (max(_lab_scale(k) * _unit_width(_font(lab_role, lab), lab) for k, lab, _ in cells) + gap)
    for i, (key, lab, val) in enumerate(cells):
        col, row = i // nrow, i % nrow  # column-major: the reading order runs down the columns
        cx, cy = x0 + col * cw, body_top + row * chh
        vrole = val_role
        if key == "serial_number" and serial_face != "same":
            vrole = serial_face
        lf, vf = _font(lab_role, lab), _font(vrole, val)
        name = key if key != "other" else f"other.{other_i}"
        if lay["labels"] == "inline":
            lsize, lpos, lanchor = max(4, int(size * _lab_scale(key))), (cx + pad, cy + chh / 2), "lm"
            vsize = _fit_size(vf, [val], cw * 0.97 - val_x, size)
            vpos = (cx + val_x, cy + chh / 2)
        else:
            lcap = chh * (0.38 if key == "other" else 0.32)
            lsize, lpos, lanchor = _fit_size(lf, [lab], cw * 0.92, lcap), (cx + pad, cy + chh * 0.04), "lt"
            vsize = _fit_size(vf, [val], cw * 0.92, size)
            vpos = (cx + pad, cy + chh * 0.68)
        d.text(lpos, lab, font=lf.get(lsize), fill=ink, anchor=lanchor)
        d.text(vpos, val, font=vf.get(vsize), fill=ink, anchor="lm")
        if key == "other":
            boxes[f"other.{other_i}.name"] = _box(d, lpos, lab, lf, lsize, lanchor)
            other_i += 1
        else:  # kept apart from ``boxes``: the legibility floor is about the fields, not their labels
            labels[key] = _box(d, lpos, lab, lf, lsize, lanchor)
        boxes[name] = _box(d, vpos, val, vf, vsize)
    if st["rivets"]:
        r, c = rivet_r, rivet_c
        for cx, cy in ((c, c), (pw - 1 - c, c), (c, ph - 1 - c), (pw - 1 - c, ph - 1 - c)):
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(150, 150, 152), outline=(70, 70, 72))
            hr = max(1, r // 3)
            d.ellipse((cx - r // 2 - hr // 2, cy - r // 2 - hr // 2, cx - r // 2 + hr, cy - r // 2 + hr),
                      fill=(225, 225, 228))
    alpha = Image.new("L", (pw, ph), 0)
    ImageDraw.Draw(alpha).rounded_rectangle((0, 0, pw - 1, ph - 1), radius=radius, fill=255)
    img.putalpha(alpha)
    look = {"style": style_name, "layout": layout_name, "header": header, "columns": ncol,
            "typeface": face, "serial_face": serial_face if serial_face != "same" else val_role}
    min_text = min(b["size"] for b in boxes.values())
    return img, {"look": look, "boxes": boxes, "label_boxes": labels, "min_text_px": min_text}


def _box(d: ImageDraw.ImageDraw, pos, text: str, font: FontRef, size: int, anchor: str = "lm") -> dict:
    bb = d.textbbox(pos, text, font=font.get(size), anchor=anchor)
    return {"text": text, "box": [round(v, 2) for v in bb], "pos": [round(v, 2) for v in pos], "anchor": anchor,
            "font": font.path, "index": font.index, "size": int(size)}


def _strengths(rng: np.random.Generator, difficulty: float, overrides: dict | None) -> dict[str, float]:
    out = {}
    for name, (p, lo, hi) in EFFECTS.items():
        on, u = rng.random() < p, rng.uniform(lo, hi)  # always draw both: the stream stays aligned
        out[name] = float(difficulty * u) if on else 0.0
    for k, v in (overrides or {}).items():
        if k not in EFFECTS:
            raise ValueError(f"unknown effect {k!r}; known: {', '.join(EFFECTS)}")
        out[k] = float(v)
    return out


_NOISE_BANK_SIZE = 1 << 22


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed Gaussian samples; a plate takes a seeded slice (7x cheaper than fresh normals)."""
    return np.random.default_rng(0x5EED).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    bank = _noise_bank()
    if n >= bank.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - n))
    return bank[start:start + n].reshape(shape)


def _to_u8(arr: np.ndarray) -> np.ndarray:
    """float32 -> uint8, clamped in place (np.clip on a fresh copy is the slow part otherwise)."""
    np.minimum(arr, 255, out=arr)
    np.maximum(arr, 0, out=arr)
    return arr.astype(np.uint8)


def _homography(src, dst) -> np.ndarray:
    """3×3 H with dst ~ H·src for four point pairs."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return np.append(np.linalg.solve(np.array(a, float), np.array(b, float)), 1.0).reshape(3, 3)


def _apply_h(h: np.ndarray, pts) -> np.ndarray:
    p = np.c_[np.asarray(pts, float), np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:]


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Workshop clutter, drawn at half size and enlarged (so it is out of focus)."""
    hw, hh = max(8, w // 2), max(8, h // 2)
    c0 = np.array(_pick(rng, BACKGROUNDS), np.float32)
    c1 = np.clip(c0 * rng.uniform(0.5, 1.3) + rng.uniform(-20, 20, 3), 0, 255)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:hh, 0:hw].astype(np.float32)
    t = ((xx / hw - 0.5) * math.cos(ang) + (yy / hh - 0.5) * math.sin(ang) + 0.7) / 1.4
    arr = c0 + (c1 - c0) * np.clip(t, 0, 1)[:, :, None] + 6 * rng.standard_normal((hh, hw, 1), dtype=np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        kind = _pick_weighted(rng, CLUTTER)
        col = tuple(int(v) for v in np.clip(_pick(rng, BACKGROUNDS) + rng.uniform(-40, 40, 3), 0, 255))
        x, y = rng.uniform(-0.1, 1.1) * hw, rng.uniform(-0.1, 1.1) * hh
        sz = rng.uniform(0.05, 0.5) * hw
        if kind == "rect":
            d.rectangle((x, y, x + sz * rng.uniform(0.2, 1), y + sz * rng.uniform(0.2, 1)), fill=col)
        elif kind == "line":
            d.line((x, y, x + sz * rng.uniform(-2, 2), y + sz * rng.uniform(-2, 2)), fill=col,
                   width=int(rng.integers(2, max(3, hw // 25))))
        elif kind == "ellipse":
            d.ellipse((x, y, x + sz, y + sz * rng.uniform(0.5, 1)), fill=col)
        else:  # a bolt head
            r = sz * 0.12
            d.regular_polygon((x, y, r), 6, rotation=rng.uniform(0, 60), fill=col, outline=(30, 30, 30))
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _photograph(content: Content, rng: np.random.Generator, size: tuple[int, int], fx: dict[str, float],
                style: str | None = None) -> tuple[Image.Image, bytes, dict]:
    w, h = size
    aspect = rng.uniform(1.3, 1.85)  # plate width / height
    # geometry in plate units (width 1): rotate, displace the corners, then fit into the frame
    ang = math.radians(fx["rotation"] * MAX_ROTATION_DEG * rng.choice((-1, 1)))
    unit = np.array([[0, 0], [1, 0], [1, 1 / aspect], [0, 1 / aspect]], float)
    centred = unit - unit.mean(0)
    rot = centred @ np.array([[math.cos(ang), math.sin(ang)], [-math.sin(ang), math.cos(ang)]])
    jitter = rng.uniform(-1, 1, (4, 2)) * fx["perspective"] * MAX_PERSPECTIVE * np.array([1, 1 / aspect])
    quad = rot + jitter
    span = quad.max(0) - quad.min(0)
    full = min(w * FILL / span[0], h * FILL / span[1])  # plate width (px) when it fills the frame
    # the plate is drawn at that size, then reduced: text is antialiased like a photo's, never enlarged
    pw, ph = int(round(full)), int(round(full / aspect))
    plate, info = _render_plate(content, rng, pw, ph, style)
    # legibility floor: the smallest text must keep MIN_TEXT_PX (at 448x336; scaled with the frame),
    # allowing for the perspective's foreshortening
    floor = MIN_TEXT_PX * min(w / 448, h / 336) * (1 + 1.5 * MAX_PERSPECTIVE * fx["perspective"])
    rel = max(min(1.0, floor / info["min_text_px"]), 1 - MAX_SHRINK * fx["scale"])
    quad = (quad - quad.min(0)) * full * rel
    slack = np.array([w, h]) - quad.max(0)
    quad += slack * (rng.uniform(0.1, 0.9, 2) if rel < 1 else 0.5)
    src = [(0, 0), (pw, 0), (pw, ph), (0, ph)]
    bg = _background(rng, w, h)
    identity = fx["rotation"] == 0 and fx["perspective"] == 0 and rel == 1
    if identity:
        quad = np.round(quad)
        quad[:, 0] = quad[0, 0] + np.array([0, pw, pw, 0])
        quad[:, 1] = quad[0, 1] + np.array([0, 0, ph, ph])
    if fx["shadow"] > 0:  # the plate's cast shadow on the background
        sh = Image.new("L", (w, h), 0)
        off = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1)]) * min(w, h) * 0.03 * fx["shadow"]
        ImageDraw.Draw(sh).polygon([tuple(p) for p in quad + off], fill=int(150 * fx["shadow"]))
        sh = sh.filter(ImageFilter.BoxBlur(max(1, int(min(w, h) * 0.012))))
        bg = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), bg, sh)
    canvas = bg.convert("RGBA")
    if identity:
        canvas.alpha_composite(plate, (int(quad[0, 0]), int(quad[0, 1])))
        hmat = np.array([[1, 0, quad[0, 0]], [0, 1, quad[0, 1]], [0, 0, 1]], float)
    else:
        hmat = _homography(src, quad)  # drawn plate pixels -> photo pixels (text boxes, glare)
        if rel < 0.9:  # reduce with a proper filter first; the perspective warp does not antialias
            rw, rh = max(8, int(round(pw * rel))), max(8, int(round(ph * rel)))
            plate = plate.resize((rw, rh), Image.Resampling.BOX if rel < 0.5 else Image.Resampling.BILINEAR,
                                 reducing_gap=None)
            src = [(0, 0), (rw, 0), (rw, rh), (0, rh)]
        # warp only the plate's bounding box: the rest of the frame is background
        bx0, by0 = np.floor(quad.min(0)).astype(int) - 1
        bx1, by1 = np.ceil(quad.max(0)).astype(int) + 1
        bx0, by0, bx1, by1 = max(0, bx0), max(0, by0), min(w, bx1), min(h, by1)
        inv = np.linalg.inv(_homography(src, quad - [bx0, by0]))
        inv = inv / inv[2, 2]
        # bilinear: the plate is never enlarged, and bicubic costs 2.5x as much for no visible gain
        warped = plate.transform((bx1 - bx0, by1 - by0), Image.Transform.PERSPECTIVE, tuple(inv.flatten()[:8]),
                                 Image.Resampling.BILINEAR, fillcolor=(0, 0, 0, 0))
        canvas.alpha_composite(warped, (int(bx0), int(by0)))
    arr = np.asarray(canvas.convert("RGB"), np.float32)
    # light: a gradient across the frame, a vignette, a soft shadow band (multiplied), glare (towards
    # white); smooth fields, so they are computed on a 1/8 grid and enlarged
    lw, lh = max(2, w // 8), max(2, h // 8)
    yy, xx = np.ogrid[0:lh, 0:lw]
    xn, yn = ((xx + 0.5) / lw - 0.5).astype(np.float32), ((yy + 0.5) / lh - 0.5).astype(np.float32)
    mul = np.ones((lh, lw), np.float32)
    if fx["light"] > 0:
        gx, gy = rng.uniform(-1, 1, 2) * 0.6 * fx["light"]
        mul *= 1 + gx * xn + gy * yn - 0.5 * fx["light"] * (xn ** 2 + yn ** 2)
    if fx["shadow"] > 0:
        a = rng.uniform(0, math.pi)
        dist = (xn * math.cos(a) + yn * math.sin(a)) - rng.uniform(-0.3, 0.3)
        mul *= 1 - 0.3 * fx["shadow"] / (1 + np.exp(-dist * 30))
    gain = np.ones(3, np.float32)
    if fx["color"] > 0:
        gain = (1 + rng.uniform(-0.12, 0.12, 3) * fx["color"]) * (1 + rng.uniform(-0.25, 0.15) * fx["color"])
    if fx["light"] > 0 or fx["shadow"] > 0 or fx["color"] > 0:
        big = np.asarray(Image.fromarray(mul, "F").resize((w, h), Image.Resampling.BILINEAR))
        arr *= big[:, :, None] * gain.astype(np.float32)
    if fx["glare"] > 0:
        cx, cy = _apply_h(hmat, [(rng.uniform(0.1, 0.9) * pw, rng.uniform(0.1, 0.9) * ph)])[0]
        sx, sy = rng.uniform(0.06, 0.2) * w, rng.uniform(0.04, 0.14) * h
        gx_, gy_ = (xx + 0.5) * (w / lw), (yy + 0.5) * (h / lh)
        g = MAX_GLARE * fx["glare"] * np.exp(-(((gx_ - cx) / sx) ** 2 + ((gy_ - cy) / sy) ** 2) / 2)
        g = g.astype(np.float32)
        big = np.asarray(Image.fromarray(g, "F").resize((w, h), Image.Resampling.BILINEAR))[:, :, None]
        arr *= 1 - big
        arr += 255 * big
    img = Image.fromarray(_to_u8(arr), "RGB")
    scale_px = w / 448
    if fx["motion"] > 0:
        k = np.zeros((5, 5), np.float32)
        k[2, :] = 1 if rng.random() < 0.5 else 0
        if not k.any():
            k[:, 2] = 1
        img = img.filter(ImageFilter.Kernel((5, 5), k.flatten().tolist(), scale=float(k.sum())))
    if fx["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(fx["blur"] * MAX_BLUR * scale_px))
    if fx["noise"] > 0:
        arr = np.asarray(img, np.float32)
        sigma = fx["noise"] * MAX_NOISE
        luma = _noise(rng, (h, w, 1)) * np.float32(sigma)
        chroma = _noise(rng, (h, w, 3)) * np.float32(0.4 * sigma)
        arr += luma
        arr += chroma
        arr += 0.5
        img = Image.fromarray(_to_u8(arr), "RGB")
    quality = int(round(95 - JPEG_SPAN * fx["jpeg"]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=False, subsampling=0 if quality >= 90 else 2)
    data = buf.getvalue()
    out = Image.open(io.BytesIO(data))
    out.load()
    # serial number's character height in the photo: how legible it is at this size
    sb = info["boxes"]["serial_number"]["box"]
    corners = _apply_h(hmat, [(sb[0], sb[1]), (sb[2], sb[1]), (sb[2], sb[3]), (sb[0], sb[3])])
    serial_px = float((np.linalg.norm(corners[3] - corners[0]) + np.linalg.norm(corners[2] - corners[1])) / 2)
    meta = {**info["look"], "plate_px": [pw, ph], "scale": round(rel, 4),
            "min_text_px": round(info["min_text_px"] * rel, 2), "quad": np.round(quad, 2).tolist(),
            "homography": np.round(hmat, 6).tolist(), "jpeg_quality": quality,
            "serial_text_px": round(serial_px, 2), "boxes": info["boxes"],
            "label_boxes": info["label_boxes"]}
    return out, data, meta


def generate(seed: int, *, size: tuple[int, int] = DEFAULT_SIZE, lang: str | None = None,
             difficulty: float = 0.5, effects: dict[str, float] | None = None,
             kind: str | None = None, style: str | None = None) -> Plate:
    """One photographed plate. ``lang`` None draws en/zh/mixed from the seed (60/20/20, English only
    without a CJK font). ``difficulty`` 0..1 scales every effect's seeded strength; ``effects`` sets
    chosen strengths directly. ``kind`` / ``style`` force the machine family / plate material (samples)."""
    w, h = int(size[0]), int(size[1])
    if w < 112 or h < 84:
        raise ValueError(f"size {w}x{h} is too small for a legible plate (min 112x84)")
    if not 0 <= difficulty <= 1:
        raise ValueError("difficulty must be within 0..1")
    rng0 = np.random.default_rng([seed, 0])
    drawn_lang = _pick_weighted(rng0, {"en": 0.6, "zh": 0.2, "mixed": 0.2})
    lang = lang or drawn_lang
    note = None
    if lang != "en" and not has_cjk():
        warnings.warn(CJK_MISSING_NOTE, stacklevel=2)
        note, lang = CJK_MISSING_NOTE, "en"
    content_seed = seed
    content = make_fields(seed, lang)
    if kind is not None:  # forced: draw content seeds until the family matches (deterministic)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        while content.kind != kind:
            content_seed += 1_000_003
            content = make_fields(content_seed, lang)
    rng = np.random.default_rng([seed, 2])
    fx = _strengths(rng, difficulty, effects)
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
    img, data, meta = _photograph(content, rng, (w, h), fx, style)
    meta = {"seed": seed, "content_seed": content_seed, "lang": lang, "kind": content.kind, "market": content.market,
            "difficulty": difficulty, "effects": {k: round(v, 4) for k, v in fx.items()}, **meta,
            **({"note": note} if note else {})}
    return Plate(img, data, content.fields, meta)


def make_plate(seed: int, *, size: tuple[int, int] = DEFAULT_SIZE, lang: str | None = None,
               difficulty: float = 0.5, **kw) -> tuple[Image.Image, dict]:
    """(photo, ground-truth fields) for one seed; see :func:`generate`."""
    p = generate(seed, size=size, lang=lang, difficulty=difficulty, **kw)
    return p.image, p.fields


def plate_seed(set_seed: int, index: int) -> int:
    """The seed of plate `index` in the set `set_seed`; sets with different seeds do not overlap."""
    return int(np.random.SeedSequence([set_seed, index]).generate_state(1, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- CLI

# the curated samples in assets/samples/ (README, UI): name -> generate() arguments
SAMPLE_SET: dict[str, dict] = {
    "plate-en-metal": dict(seed=11, lang="en", style="metal", kind="motor3", difficulty=0.45),
    "plate-zh-painted": dict(seed=23, lang="zh", style="painted", kind="pump", difficulty=0.45),
    "plate-mixed-sticker": dict(seed=5, lang="mixed", style="sticker", kind="motor3", difficulty=0.4),
    "plate-en-sticker-1ph": dict(seed=31, lang="en", style="sticker", kind="motor1", difficulty=0.5),
}
SAMPLE_SIZE = (672, 504)


def write_samples(out_dir: str | Path, size: tuple[int, int] = SAMPLE_SIZE) -> list[Path]:
    """The curated samples: NAME.jpg and NAME.json (ground truth and how to regenerate it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, kw in SAMPLE_SET.items():
        p = generate(size=size, **kw)
        rec = {"seed": kw["seed"], "content_seed": p.meta["content_seed"], "lang": p.meta["lang"],
               "kind": p.meta["kind"], "style": p.meta["style"], "difficulty": kw["difficulty"],
               "size": list(size), "generate": {**kw, "size": list(size)}, "fields": p.fields}
        atomic_write_bytes(out / f"{name}.jpg", p.jpeg)
        atomic_write_bytes(out / f"{name}.json", (json.dumps(rec, ensure_ascii=False, indent=2) + "\n").encode())
        written.append(out / f"{name}.jpg")
    _fsync_dir(out)
    return written

def write_set(out_dir: str | Path, count: int, seed: int, *, size=DEFAULT_SIZE, lang: str | None = None,
              difficulty: float = 0.5, progress: bool = True, index_name: str = "plates.jsonl") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / index_name
    part = index.with_name(index.name + ".part")
    if progress and lang not in (None, "en") and not has_cjk():
        print(CJK_MISSING_NOTE, file=sys.stderr)
    t0 = last = time.monotonic()
    try:
        with open(part, "w", encoding="utf-8") as jf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CJK note is printed once above, not per plate
            for i in range(count):
                s = plate_seed(seed, i)
                p = generate(s, size=size, lang=lang, difficulty=difficulty)
                name = f"plate-{i:06d}.jpg"
                atomic_write_bytes(out / name, p.jpeg)
                rec = {"file": name, "seed": s, "set_seed": seed, "index": i, "fields": p.fields,
                       "meta": {k: v for k, v in p.meta.items() if k not in ("boxes", "homography")}}
                jf.write(json.dumps(rec, ensure_ascii=False) + "\n")
                now = time.monotonic()
                if progress and (now - last >= 2 or i + 1 == count):
                    last = now
                    print(f"plates: {i + 1}/{count} ({100 * (i + 1) // count}%, "
                          f"{1000 * (now - t0) / (i + 1):.1f} ms/plate)", file=sys.stderr, flush=True)
            jf.flush()
            os.fsync(jf.fileno())
        os.replace(part, index)
        _fsync_dir(out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return index


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 448x336, not {text!r}") from None
    return w, h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.plates", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="set seed; plate i uses plate_seed(seed, i)")
    ap.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, help="WxH, default 448x336")
    ap.add_argument("--lang", choices=("any",) + LANGS, default="any")
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--samples", action="store_true",
                    help="write the curated samples (SAMPLE_SET) to OUT_DIR instead of a numbered set")
    a = ap.parse_args(argv)
    if a.samples:
        for path in write_samples(a.out_dir):
            print(f"plates: {path} ({path.stat().st_size // 1024} KB)", file=sys.stderr)
        return 0
    if a.count < 1:
        ap.error("--count must be at least 1")
    if not 0 <= a.difficulty <= 1:
        ap.error("--difficulty must be within 0..1")
    index = write_set(a.out_dir, a.count, a.seed, size=a.size, lang=None if a.lang == "any" else a.lang,
                      difficulty=a.difficulty, progress=not a.quiet)
    if not a.quiet:
        print(f"plates: {a.count} plates and {index} written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
