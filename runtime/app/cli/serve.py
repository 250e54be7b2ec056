"""``glmv serve`` (the local server: web UI, app API, OpenAI-compatible /v1), ``glmv self-test``
(the offline end-to-end check on the demo model) and ``glmv check-winpe`` (the bundle's system DLLs)."""
from __future__ import annotations

from runtime.app.cli.common import EXIT_OK, EXIT_USAGE, UsageError, _engine, _err
from runtime.engine.model_locator import locate_model_files_or_demo


def cmd_self_test(a) -> int:
    from runtime.app import self_test
    return self_test.run(a.data_dir)


def cmd_check_winpe(a) -> int:
    from pathlib import Path
    from runtime.app import winpe_check
    from runtime.common.paths import resources_dir
    try:
        return winpe_check.run(resources_dir(), Path(a.system32) if a.system32 else None)
    except FileNotFoundError as e:
        _err(str(e))
        return EXIT_USAGE


def cmd_serve(a) -> int:
    """The local server (runtime/app/server/app.py); the model loads in the background (see /api/status).
    The socket is bound and announced before the heavy imports, so the URL — and with no display
    the fallback line — come at once."""
    from runtime.app.window import display_available, no_display_notice
    from runtime.common.paths import data_dir
    from runtime.app.server.listen import BindError, announce
    if a.pixel_budget is not None:   # every photo would get a 400 otherwise: say it once, now
        from runtime.engine.images import ImageError, check_budget
        try:
            check_budget(a.pixel_budget)
        except ImageError as e:
            raise UsageError(f"--pixel-budget: {e}") from None
    try:
        ann = announce(a.host, a.port, a.token)
    except BindError as e:
        _err(str(e))
        return EXIT_USAGE
    window = not a.no_window
    if window and not display_available():
        no_display_notice(ann.page)
        window = False
    from runtime.app.server import app as server

    def locate():
        return locate_model_files_or_demo(a.model_dir, a.data_dir)

    def factory(text, mmproj, progress):
        return _engine(a, text, mmproj, progress)   # load progress reaches /api/status
    server.serve_forever(a.host, a.port, a.token, window=window, announced=ann, data_dir=data_dir(a.data_dir),
                         n_ctx=a.ctx, locate=locate, engine_factory=factory, default_max_tokens=a.max_tokens,
                         pixel_budget=a.pixel_budget, allowed_hosts=tuple(a.allow_host or ()))
    return EXIT_OK
