"""The one way the program draws a progress bar on the console (the converter's files, the CLI's
reading of a photo): a tqdm bar that fits the terminal it is drawn on.

tqdm is imported only when a bar is made, so this layer stays importable with the standard
library alone (the build scripts import runtime.common before dependencies are installed).
"""
from __future__ import annotations

import os
import sys

DEFAULT_SIZE = (80, 24)   # columns, lines: what a terminal that reports no size is taken to be


def is_terminal(file) -> bool:
    return bool(getattr(file, "isatty", lambda: False)())


def terminal_size(file) -> tuple[int, int] | None:
    """(columns, lines) of the terminal ``file`` writes to; None when it is not one. A terminal
    that reports no size (a bare pseudo-terminal says 0×0) counts as 80×24: tqdm would otherwise
    shrink its bar to nothing."""
    if not is_terminal(file):
        return None
    try:
        size = os.get_terminal_size(file.fileno())
    except (AttributeError, OSError, ValueError):
        return DEFAULT_SIZE
    return size.columns or DEFAULT_SIZE[0], size.lines or DEFAULT_SIZE[1]


def progress_bar(total: int, desc: str, *, file=None, **options):
    """A tqdm bar on ``file`` (stderr). It is drawn whether or not ``file`` is a terminal: the
    caller has decided to show progress (tqdm on its own hides bars off a terminal). On a
    terminal it is as wide as the terminal; ``options`` go to tqdm (unit, leave, bar_format…)."""
    from tqdm import tqdm
    file = file or sys.stderr
    size = terminal_size(file)
    if size is not None:
        options = {"ncols": size[0], "nrows": size[1], **options}
    return tqdm(total=total, desc=desc, file=file, disable=False, **options)
