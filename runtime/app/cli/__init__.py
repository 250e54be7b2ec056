"""``glmv``, the command line of glmv-portable (argparse). The command list and exit codes are in
dispatch.py, which parses, checks and runs a command; parser.py holds every option; the commands
live by what they do: ask.py (ask, chat), plate.py (read-plate, demo; photos.py checks a batch's
photos up front), models.py (synth, convert, models, doctor), serve.py (serve, self-test);
common.py is what they share.

``main`` is the ``glmv`` entry point (pyproject.toml, portable_build/entry.py, ``python -m``).
"""
from runtime.app.cli.common import (EXIT_FAIL, EXIT_INPUT, EXIT_OK, EXIT_RESOURCES, EXIT_USAGE, UsageError,
                                    _resolve_sampling, _sampling)
from runtime.app.cli.dispatch import build_parser, main

__all__ = ["main", "build_parser", "UsageError", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "EXIT_INPUT",
           "EXIT_RESOURCES", "_sampling", "_resolve_sampling"]
