"""``python -m runtime.app.cli …``: the ``glmv`` command, run from the source tree (tests, benchmarks)."""
import sys

from runtime.app.cli import main

sys.exit(main())
