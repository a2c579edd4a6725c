"""`python -m mpc ...` is the `mpc` command (see mpc.cli), for environments without the script."""

from __future__ import annotations

import sys

from mpc.cli import main

if __name__ == "__main__":
    sys.exit(main())
