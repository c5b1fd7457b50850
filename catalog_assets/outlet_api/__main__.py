"""`python -m catalog_assets.outlet_api --host 127.0.0.1 --port 8090`: the API alone."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers > 1 and not os.environ.get("OUTLET_CURSOR_SECRET"):
        # Each worker would sign with its own random key and refuse the others' cursors.
        parser.error("--workers > 1 needs OUTLET_CURSOR_SECRET set")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        "catalog_assets.outlet_api:app", host=args.host, port=args.port, workers=args.workers
    )


if __name__ == "__main__":
    main()
