"""The bundle's entry point: ``glmv`` (and ``glmv-cli`` on Windows) run the CLI's main()."""
import os
import sys

# A windowed Windows executable has no console: sys.stdout/stderr are None, and libraries that
# configure logging on them (uvicorn) fail at start. Give them somewhere harmless to write.
# Say so (GLMV_WINDOWED): when the window cannot open, glmv.exe must open a console UI rather
# than print to nowhere (runtime/app/window.py, console_fallback).
if sys.stdout is None:
    os.environ["GLMV_WINDOWED"] = "1"
else:
    os.environ.pop("GLMV_WINDOWED", None)
for _name in ("stdout", "stderr"):
    if getattr(sys, _name) is None:
        setattr(sys, _name, open(os.devnull, "w", encoding="utf-8"))

from runtime.app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
