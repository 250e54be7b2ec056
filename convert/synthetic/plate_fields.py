"""One synthetic nameplate's content, drawn from its seed: the ground-truth fields (the runtime's
read-plate schema, values exactly as printed) and the labelled cells that will be printed.

The numbers are consistent (P ≈ √3·V·I·PF·η, speed below the synchronous speed), so
``runtime.tasks.plate.check`` finds nothing to warn about on a plate whose reading is right.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convert.synthetic.plate_tables import (ALWAYS_FIELDS, CELL_ORDER, DUTIES, EFF_CLASSES, FIELD_KEYS, HP_RATINGS,
                                            HP_W, IEC_FRAMES, INSULATION, IP_CODES, KINDS, KW_RATINGS, LABELS, LANGS,
                                            MAKERS_EN, MAKERS_ZH, MARKET_BY_LANG, MARKETS, MAX_OTHER, MODEL_PATTERNS,
                                            NEMA_FRAMES, OPTIONAL_FIELDS, OPTIONAL_OTHER, OTHER, SERIAL_LETTERS,
                                            SERIAL_PATTERNS, SERIES_EN, SERIES_ZH, YEAR_FORMATS, YEARS,
                                            _pick, _pick_weighted, _step)


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
