"""Fonts for the synthetic nameplates: which installed faces play which role, and text measurement.

Fonts are Debian's, found by path: DejaVu (fonts-dejavu-core) for Latin text, Noto Sans CJK
(fonts-noto-cjk) or WenQuanYi Micro Hei (fonts-wqy-microhei) for Chinese. Looked up once and cached:
a plate draws hundreds of strings, and loading a face is the slow part.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from PIL import ImageFont

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


def _is_cjk(text: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text)


def _font(role: str, text: str) -> FontRef:
    if _is_cjk(text):
        return fonts()["cjk_bold" if "bold" in role else "cjk"]
    return fonts()[role]


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
