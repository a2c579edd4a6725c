"""How a session meets Ray before starting it: which cluster it joins, and what Ray says about it.

Responsibility: the cluster address a session uses (`cluster_address`: the one given, else
``$RAY_ADDRESS``), and keeping Ray's notice that it turned token authentication on for a new
local instance off the user's screen (`quiet_token_notice`): that is the setting we want, printed
on every run. Ray's warning that token authentication is *off* is kept.
Security model: nothing here changes how Ray authenticates (``RAY_AUTH_MODE`` and the token are
left to Ray and the user, see docs/deploy.md); only one informational log record is dropped.
"""

from __future__ import annotations

import logging
import os

#: The logger of Ray's token-authentication set-up, and the start of the notice dropped from it.
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_ENABLED_NOTICE = "Token authentication is enabled for this Ray cluster"


class _TokenNoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_ENABLED_NOTICE)


def quiet_token_notice() -> None:
    """Drop Ray's "token authentication is enabled" notice (installed once per process)."""
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    if not any(isinstance(f, _TokenNoticeFilter) for f in logger.filters):
        logger.addFilter(_TokenNoticeFilter())


def cluster_address(given: str | None) -> str | None:
    """The Ray cluster a session joins: `given`, else ``$RAY_ADDRESS``; None (or ``"local"``):
    a new private instance."""
    address = given or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address
