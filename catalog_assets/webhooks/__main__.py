"""Run the receiver: ``python -m catalog_assets.webhooks --host 127.0.0.1 --port 8091``.

The secret comes from `WEBHOOK_SECRET` only (never a command-line flag, which `ps` would show).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from catalog_assets.webhooks.app import WebhookReceiver


def _stop(*_: object) -> None:
    # shutdown() from the serving thread would deadlock; unwinding the loop is enough.
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument(
        "--spool", default=os.environ.get("WEBHOOK_SPOOL_PATH", "data/webhooks.sqlite")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret:
        raise SystemExit("WEBHOOK_SECRET is not set; refusing to run an unauthenticated webhook")
    receiver = WebhookReceiver(secret, args.spool, args.host, args.port)
    signal.signal(signal.SIGTERM, _stop)
    logging.getLogger("catalog_assets.webhooks").info(
        "listening on %s (spool %s)", receiver.url(), args.spool
    )
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
