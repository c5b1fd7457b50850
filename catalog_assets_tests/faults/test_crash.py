"""(4) The run process is killed (SIGKILL) in the middle of pushing.

Every HTTP batch is recorded in DuckDB (one committed `push_batches` row carrying its items' hashes), so a
kill loses at most the record of the batch in flight. The parent runs the emulators, a child
process runs `full_resync`; the Tec.Delivery emulator holds the child's third product batch
until the child is dead, then accepts it (Tec.Delivery finished the work; we never heard). The
next run must deliver everything pending and re-push nothing but what was in flight: that batch
(batches go out `push_concurrency` at a time, and one settled batch's record may still be
being committed: at most push_concurrency + 1 batches, never the run's earlier ones).
"""

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import dagster as dg

from .conftest import delivered, live_valid_ids, pushes

KILL_AT_PRODUCT_BATCH = 3


def test_sigkill_mid_push_loses_nothing_and_repushes_at_most_the_batch_in_flight(
    platform, ledger, leak_guard, tmp_path
):
    tec = platform.tec
    reached, release = threading.Event(), threading.Event()
    product_batches = []

    def hold_the_third_product_batch(body) -> bool:
        if body["payload"][0].get("is_category"):
            return False
        product_batches.append([i["external_id"] for i in body["payload"]])
        if len(product_batches) == KILL_AT_PRODUCT_BATCH:
            reached.set()
            release.wait(120)
        return False  # then served normally: the batch is accepted after the client died

    tec.inject(match=hold_the_third_product_batch, times=1000)
    home = tmp_path / "child_home"
    home.mkdir()
    env = {
        **os.environ,
        "CRASH_ONEC_URL": platform.onec.url,
        "CRASH_TEC_URL": tec.url,
        "CRASH_DB": platform.store.path,
        "CRASH_DAGSTER_HOME": str(home),
    }
    out = (tmp_path / "child.out").open("w+")
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crash_child.py"))],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        assert reached.wait(240), "the child never reached the third product batch"
        child.send_signal(signal.SIGKILL)
        assert child.wait(60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        release.set()
    ledger.fault("SIGKILL of the run process mid-push")
    held = set(product_batches[KILL_AT_PRODUCT_BATCH - 1])
    # The held request completes now; wait until the emulator has logged it.
    for _ in range(600):
        if any(set(r["external_ids"]) == held for r in tec.requests):
            break
        threading.Event().wait(0.05)
    tec.clear_faults()
    accepted_before = set(pushes(platform))
    assert held <= accepted_before and len(accepted_before) < len(live_valid_ids(platform))

    # The child's DuckDB knows every batch it settled, not the ones in flight when it died:
    # the held one, at most push_concurrency - 1 others sent beside it, and at most one whose
    # record the writer thread was still committing.
    recorded = {
        i
        for (ids,) in platform.query("SELECT external_ids FROM push_batches WHERE ok")
        for i in ids
    }
    unrecorded = [set(b) for b in product_batches if not set(b) <= recorded]
    width = platform.resources["tec_delivery"].push_concurrency
    assert held in unrecorded and len(unrecorded) <= width + 1
    in_flight = set().union(*unrecorded) & accepted_before

    mark = len(tec.requests)
    recovery = platform.run("incremental_sync")
    assert recovery.success
    repushed = Counter(pushes(platform, mark))
    assert max(repushed.values()) == 1
    again = set(repushed) & accepted_before
    # Exactly what was in flight went out again: accepted by Tec.Delivery, never recorded.
    assert again == in_flight and len(again) <= 100 * (width + 1)
    lost = ledger.settle(live_valid_ids(platform), delivered(platform))
    lost |= ledger.settle(live_valid_ids(platform, "category"), delivered(platform, "category"))
    assert lost == set()
    assert platform.query(
        "SELECT count(*) FROM onec_products p LEFT JOIN tec_delivery_products d "
        "ON d.external_id = p.id WHERE d.pushed_hash IS DISTINCT FROM p.content_hash"
    ) == [(0,)]

    # What the killed child left behind is searched for secrets too.
    out.seek(0)
    leak_guard.text(out.read())
    child_instance = dg.DagsterInstance.local_temp(tempdir=str(home))
    leak_guard.instances.append(child_instance)
