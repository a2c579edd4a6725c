"""mpc: a runtime for secure multi-party computation.

Import is cheap and side-effect free: nothing starts, nothing is registered from outside packages
until it is asked for. See README.md and docs/ for the user guide.
"""

from __future__ import annotations

__version__ = "0.1.0"
