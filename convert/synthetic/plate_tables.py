"""What a synthetic nameplate can say: the machine families, markets, ratings, label wordings and
value formats the plate generator draws from, and the seeded pickers over them.

The makers are fictional (no real trademark in the training data); the ratings, frames and curves
are realistic enough that a drawn plate's numbers agree with each other (see plate_fields.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.tasks.plate import FIELDS

FIELD_KEYS: tuple[str, ...] = tuple(k for k, _ in FIELDS)
LANGS = ("en", "zh", "mixed")

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


# Seeded choices over the tables above; every plate module draws through these, so a seed's
# random stream is consumed the same way wherever the drawing code lives.
def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _pick_weighted(rng: np.random.Generator, table: dict):
    keys = list(table)
    p = np.array([table[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _step(table, x):
    return next(v for lim, v in table if x <= lim)
