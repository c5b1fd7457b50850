"""Child process for the crash test: one `full_resync` against emulators the parent runs.

It is a real, separate process so the parent can SIGKILL it mid-push (no `finally`, no atexit,
no DuckDB checkpoint) and then count what Tec.Delivery received. Resources come from the
environment the parent sets; secrets only as `dg.EnvVar`.
"""

import os

import dagster as dg

from catalog_assets.definitions import build_definitions
from catalog_assets.onec.client import OneCCatalogClient
from catalog_assets.storage import CatalogStore
from catalog_assets.tec_delivery.client import TecDeliveryClient


def main() -> None:
    resources = {
        "onec": OneCCatalogClient(
            base_url=os.environ["CRASH_ONEC_URL"],
            username="integration",
            password=dg.EnvVar("ONEC_PASSWORD"),
            backoff_seconds=0.01,
            max_retries=2,
        ),
        "tec_delivery": TecDeliveryClient(
            url=os.environ["CRASH_TEC_URL"],
            token=dg.EnvVar("TEC_DELIVERY_TOKEN"),
            backoff_seconds=0.01,
            max_retries=0,
            timeout_seconds=120,
        ),
        "store": CatalogStore(path=os.environ["CRASH_DB"]),
    }
    instance = dg.DagsterInstance.local_temp(tempdir=os.environ["CRASH_DAGSTER_HOME"])
    job = build_definitions(resources).resolve_job_def("full_resync")
    job.execute_in_process(instance=instance)


if __name__ == "__main__":
    main()
