"""The API's settings, all from the environment (the same names and defaults as `OutletHub`).

`OUTLET_CURSOR_SECRET` signs cursors. When it is unset the API makes a random one per process
and logs a warning: cursors then stop being valid at the next restart, and an outlet that
sends an old one gets 400 `invalid_cursor` (the reference client then continues from the
server-side acknowledgement, so nothing is lost, but set the secret in production). The secret
is never written anywhere, which is why it is not simply persisted next to the state.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass

from catalog_assets.outlets.resource import (
    DEFAULT_CONFIG,
    DEFAULT_SNAPSHOT_DIR,
    DEFAULT_STATE_PATH,
)

logger = logging.getLogger("catalog_assets.outlet_api")

RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class ApiSettings:
    config_path: str
    snapshot_dir: str
    state_path: str
    cursor_secret: bytes

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return (
            f"ApiSettings(config_path={self.config_path!r}, snapshot_dir={self.snapshot_dir!r}, "
            f"state_path={self.state_path!r})"
        )

    @classmethod
    def from_env(cls) -> ApiSettings:
        secret = os.environ.get("OUTLET_CURSOR_SECRET", "")
        if not secret:
            logger.warning(
                "OUTLET_CURSOR_SECRET is not set: cursors are signed with a random per-process "
                "key and become invalid when the API restarts"
            )
        return cls(
            config_path=os.environ.get("OUTLETS_CONFIG") or DEFAULT_CONFIG,
            snapshot_dir=os.environ.get("OUTLET_SNAPSHOT_DIR") or DEFAULT_SNAPSHOT_DIR,
            state_path=os.environ.get("OUTLET_STATE_PATH") or DEFAULT_STATE_PATH,
            cursor_secret=secret.encode() if secret else secrets.token_bytes(32),
        )
