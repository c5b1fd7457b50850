"""The outlet pull API: `uvicorn catalog_assets.outlet_api:app` or
`python -m catalog_assets.outlet_api --host 127.0.0.1 --port 8090`."""

from catalog_assets.outlet_api.app import create_app

app = create_app()

__all__ = ["app", "create_app"]
