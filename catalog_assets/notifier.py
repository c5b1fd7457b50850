"""One way out for every alert: a JSON POST to `ALERT_WEBHOOK_URL` (Slack and Mattermost
incoming-webhook compatible: `{"text": ...}`), or a log line when it is unset.

Alerts are about incidents, not evaluations: a check that fails on every tick for an hour is
one message when it starts failing and one when it recovers. `incident_transitions` is the pure
bookkeeping for that; the caller keeps the open incidents (a sensor cursor does nicely).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dagster as dg

from catalog_assets.http import url_origin

logger = logging.getLogger("catalog_assets.alerts")


@dataclass(frozen=True)
class Transitions:
    opened: dict[str, str]  # incident key -> what is wrong
    resolved: dict[str, str]  # incident key -> what was wrong


def incident_transitions(
    open_incidents: dict[str, str], current: dict[str, str | None]
) -> Transitions:
    """`current` maps each observed key to its problem text, or None when healthy.

    Keys not observed this time keep their state: not hearing about a check is no recovery.
    The caller stores a transition only once its message went out, so it keeps the open set.
    """
    opened = {k: v for k, v in current.items() if v is not None and k not in open_incidents}
    resolved = {
        k: open_incidents[k] for k, v in current.items() if v is None and k in open_incidents
    }
    return Transitions(opened, resolved)


class Notifier(dg.ConfigurableResource):
    webhook_url: str | None = None
    timeout_seconds: float = 10.0

    def send(self, text: str) -> bool:
        """Deliver one alert. A failing alert channel is logged, never raised: the thing being
        alerted about matters more than the alert about it. Returns whether it was delivered."""
        if not self.webhook_url:
            logger.warning("ALERT %s", text)
            return True
        # Imported here, not at the top: every sync run's process loads this module with the
        # definitions but never alerts, and requests (with charset_normalizer) costs it ~0.1 s
        # and ~6 MB.
        import requests

        try:
            response = requests.post(
                self.webhook_url, json={"text": text}, timeout=self.timeout_seconds
            )
        except requests.RequestException as exc:
            logger.error(
                "alert to %s failed (%s): %s",
                url_origin(self.webhook_url),
                type(exc).__name__,
                text,
            )
            return False
        if response.status_code >= 300:
            logger.error(
                "alert to %s answered HTTP %s: %s",
                url_origin(self.webhook_url),
                response.status_code,
                text,
            )
            return False
        return True
