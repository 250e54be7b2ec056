"""Generated nameplate photos for the inventory's tests (convert.synthetic.plates: the kind of plate
the demo model was trained on), as JPEG bytes or as files in a folder."""
from __future__ import annotations

import io
from pathlib import Path


def plate_jpeg(seed: int) -> bytes:
    from convert.synthetic.plates import make_plate
    buf = io.BytesIO()
    make_plate(seed)[0].save(buf, "JPEG", quality=90)
    return buf.getvalue()


def plate_files(folder: Path, n: int, seed: int, name: str = "plate-{:02d}.jpg") -> list[Path]:
    """``n`` plates (seeds ``seed``…) as JPEG files named ``name.format(i)`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(folder / name.format(i))
        out[-1].write_bytes(plate_jpeg(seed + i))
    return out
