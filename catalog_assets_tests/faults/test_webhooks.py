"""(6) Tec.Delivery's "processing finished" webhooks: received, authenticated, spooled,
ingested into DuckDB and shown on the asset graph; everything else refused with a 4xx.

The Tec.Delivery emulator calls the webhook URL our client sends with every accepted request,
so these notifications are the real thing, end to end over loopback.
"""

import glob
import http.client
import json
import os
import socket
import time

import dagster as dg
import pytest
import requests

from catalog_assets.assets.tec_delivery_processing import tec_delivery_webhook_sensor
from catalog_assets.tec_delivery.client import TecDeliveryClient
from catalog_assets.webhooks import WebhookReceiver, WebhookSpool, spool

from ..conftest import ONEC_PASSWORD, TOKEN, materializations
from .conftest import WEBHOOK_SECRET


@pytest.fixture
def webhook_secret() -> str:
    """The receiver's secret; a test parametrizes it to try another."""
    return WEBHOOK_SECRET


@pytest.fixture
def receiver(tmp_path, leak_guard, webhook_secret):
    spool = str(tmp_path / "webhooks.sqlite")
    leak_guard.spools.append(spool)
    with WebhookReceiver(webhook_secret, spool) as running:
        yield running


@pytest.fixture
def hooked(platform, receiver, monkeypatch, webhook_secret):
    """The platform with TEC_DELIVERY_WEBHOOK_URL (secret inside) and the receiver's spool."""
    monkeypatch.setenv("TEC_DELIVERY_WEBHOOK_URL", receiver.url(webhook_secret))
    platform.resources.update(
        tec_delivery=TecDeliveryClient(
            url=platform.tec.url,
            token=dg.EnvVar("TEC_DELIVERY_TOKEN"),
            webhook_url=dg.EnvVar("TEC_DELIVERY_WEBHOOK_URL"),
            backoff_seconds=0.01,
            max_retries=2,
            timeout_seconds=5,
        ),
        webhook_spool=WebhookSpool(path=receiver._server.spool_path),
    )
    platform.tec.webhook_delay_s = 0.05
    return platform


def settle_webhooks(platform) -> list[dict]:
    """Wait (bounded) until the emulator has sent every webhook it scheduled."""
    for _ in range(400):
        hooks = platform.tec.webhooks
        if all(h["status"] != "pending" for h in hooks):
            return hooks
        time.sleep(0.05)
    raise AssertionError(f"webhooks still pending: {platform.tec.webhooks}")


def tick(platform):
    with dg.build_sensor_context(
        instance=platform.instance, resources=platform.resources
    ) as context:
        return tec_delivery_webhook_sensor(context)


def ingest(platform):
    job = platform.defs.resolve_job_def("tec_delivery_processing_job")
    return materializations(
        job.execute_in_process(instance=platform.instance), "tec_delivery_processing"
    )


def test_notifications_mark_items_processed_and_only_for_their_current_content(hooked, ledger):
    platform = hooked
    assert platform.run("full_resync").success
    hooks = settle_webhooks(platform)
    accepted = [r for r in platform.tec.requests if r["status"] == 200]
    assert len(hooks) == len(accepted) and all(h["http_status"] == 200 for h in hooks)

    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests
    meta = ingest(platform)
    assert meta["new_notifications"] == len(accepted) and meta["unmatched_notifications"] == 0
    assert meta["products_processed"] == len(platform.catalog.products())
    assert meta["products_awaiting_processing"] == 0
    assert meta["categories_awaiting_processing"] == 0
    skipped = tick(platform)
    assert isinstance(skipped, dg.SkipReason) and "ingested" in skipped.skip_message

    # A changed product is delivered again: it waits for the notification about *that* push,
    # even though an older notification already named it.
    changed = platform.catalog.products()[0]["id"]
    platform.catalog.upsert_product({"id": changed, "price": 4321})
    assert platform.run("incremental_sync").success
    assert platform.query(
        "SELECT processing_status = 'done' AND processed_batch_id = last_batch_id "
        "FROM tec_delivery_products WHERE external_id = ?",
        [changed],
    ) == [(False,)]
    settle_webhooks(platform)
    meta = ingest(platform)
    assert meta["new_notifications"] == 1 and meta["products_awaiting_processing"] == 0

    # Tec.Delivery retries a notification: it is one notification, not two.
    last = platform.tec.webhooks[-1]
    replay = {
        "event": "products.processed",
        "request_id": last["request_id"],
        "external_ids": [changed],
        "status": "done",
    }
    answer = requests.post(last["url"], json=replay, timeout=5)
    assert answer.status_code == 200 and answer.json()["duplicate"] is True
    ledger.fault("repeated webhook notification")
    assert ingest(platform)["new_notifications"] == 0


def test_a_spool_lost_and_recreated_is_still_ingested(hooked, ledger):
    """The spool is a file on the receiver's host: a volume not kept across a redeploy, or a
    changed WEBHOOK_SPOOL_PATH, starts a new one. Its notifications must not be numbered below
    what DuckDB already ingested from the old one, or they are skipped as ingested, silently."""
    platform = hooked
    assert platform.run("full_resync").success
    settle_webhooks(platform)
    assert ingest(platform)["new_notifications"] == len(platform.tec.webhooks)
    spool_path = platform.resources["webhook_spool"].path
    for leftover in glob.glob(f"{spool_path}*"):
        os.remove(leftover)
    ledger.fault("webhook spool lost")

    changed = platform.catalog.products()[0]["id"]
    platform.catalog.upsert_product({"id": changed, "price": 4321})
    assert platform.run("incremental_sync").success
    settle_webhooks(platform)
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests, outcome
    meta = ingest(platform)
    assert meta["new_notifications"] == 1 and meta["products_awaiting_processing"] == 0


# Characters a URL gives a meaning of its own: a space, a separator, the fragment, an escape.
# It starts with the usual secret, so the leak guard also looks for it.
AWKWARD_SECRET = f"{WEBHOOK_SECRET}+/=&#%41"


@pytest.mark.parametrize("webhook_secret", [AWKWARD_SECRET], ids=["awkward"])
def test_a_secret_with_url_characters_in_it_still_lets_notifications_in(hooked, ledger):
    """The secret travels in the URL registered with Tec.Delivery: unescaped, its `+` arrives
    as a space, and `&` or `#` cut it short, so every notification would be refused."""
    platform = hooked
    assert platform.run("full_resync").success
    hooks = settle_webhooks(platform)
    ledger.bad_input("webhook secret with URL characters")
    statuses = [h.get("http_status") for h in hooks]  # not the hooks: their URLs hold it
    assert statuses and set(statuses) == {200}, statuses
    meta = ingest(platform)
    assert meta["new_notifications"] == len(hooks) and meta["products_awaiting_processing"] == 0


def raw_request(receiver, head: str) -> str:
    """For what `requests` will not send: no Content-Length, or a lying one."""
    with socket.create_connection((receiver.host, receiver.port), timeout=5) as sock:
        sock.sendall(head.encode())
        return sock.recv(4096).decode()


def test_unauthenticated_and_malformed_calls_get_4xx_and_leave_no_secret_in_logs(
    receiver, caplog, ledger
):
    base = receiver.url()
    good = {
        "event": "products.processed",
        "request_id": "r-1",
        "external_ids": ["a"],
        "status": "done",
    }
    # Every bad body carries secrets, as a misconfigured sender might: none may be logged.
    leaky = f"token={TOKEN} password={ONEC_PASSWORD} secret={WEBHOOK_SECRET}"
    cases = [
        ("no token", base, {}, json.dumps(good), 401),
        ("wrong token", f"{base}?token=guess-{TOKEN}", {}, json.dumps(good), 401),
        ("wrong header", base, {"X-Webhook-Token": "nope"}, json.dumps(good), 401),
        ("not JSON", receiver.url(WEBHOOK_SECRET), {}, f"<html>{leaky}</html>", 400),
        ("JSON list", receiver.url(WEBHOOK_SECRET), {}, json.dumps([leaky]), 422),
        (
            "unknown event",
            receiver.url(WEBHOOK_SECRET),
            {},
            json.dumps({**good, "event": leaky}),
            422,
        ),
        (
            "ids not a list",
            receiver.url(WEBHOOK_SECRET),
            {},
            json.dumps({**good, "external_ids": leaky}),
            422,
        ),
        (
            "no request_id",
            receiver.url(WEBHOOK_SECRET),
            {},
            json.dumps({**good, "request_id": ""}),
            422,
        ),
        ("no status", receiver.url(WEBHOOK_SECRET), {}, json.dumps({**good, "status": None}), 422),
        # Parsed, but neither the spool nor DuckDB could store it: refused, not a 503 (which
        # the sender would retry for ever) or a dropped connection.
        ("too deep", receiver.url(WEBHOOK_SECRET), {}, "[" * 100_000 + "]" * 100_000, 400),
        (
            "half an emoji",
            receiver.url(WEBHOOK_SECRET),
            {},
            json.dumps({**good, "external_ids": ["a", "\ud83c"]}),
            400,
        ),
        (
            "wrong route",
            base.replace("/webhook", "/other") + f"?token={WEBHOOK_SECRET}",
            {},
            "{}",
            404,
        ),
    ]
    for label, url, headers, body, expected in cases:
        answer = requests.post(url, data=body.encode(), headers=headers, timeout=5)
        assert answer.status_code == expected, label
        assert answer.json()["status"] == "error" and WEBHOOK_SECRET not in answer.text
    assert requests.get(receiver.url(WEBHOOK_SECRET), timeout=5).status_code == 405
    path = f"/tec-delivery/webhook?token={WEBHOOK_SECRET}"
    assert " 411 " in raw_request(receiver, f"POST {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    too_big = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    assert " 413 " in raw_request(receiver, too_big)
    ledger.bad_input("webhook call", len(cases) + 3)

    # The secret in a header works too; the refusals were each logged (without bodies).
    ok = requests.post(base, json=good, headers={"X-Webhook-Token": WEBHOOK_SECRET}, timeout=5)
    assert ok.status_code == 200 and ok.json() == {"status": "ok", "duplicate": False}
    refusals = [r for r in caplog.records if r.getMessage().startswith("webhook refused")]
    assert len(refusals) == len(cases) + 3
    assert all("token=***" in r.getMessage() for r in refusals if "token=" in r.getMessage())
    assert len(WebhookSpool(path=receiver._server.spool_path).read_after(0)) == 1


def test_a_peer_that_stops_sending_is_cut_off_and_the_receiver_keeps_serving(
    tmp_path, caplog, ledger
):
    """The receiver faces the internet: a connection that sends nothing, or less body than
    its Content-Length promised, must not hold a server thread for ever (a few hundred such
    peers would starve Tec.Delivery's real calls). It is closed after `idle_timeout_seconds`,
    unspooled, and says why in the log."""
    spool_path = str(tmp_path / "webhooks.sqlite")
    good = {"event": "products.processed", "request_id": "r", "external_ids": ["a"]}
    with WebhookReceiver(WEBHOOK_SECRET, spool_path, idle_timeout_seconds=0.5) as receiver:
        path = f"/tec-delivery/webhook?token={WEBHOOK_SECRET}"
        short = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{}}"
        for head in ("", "POST /tec-delivery/webhook HTTP/1.1\r\n", short):
            with socket.create_connection((receiver.host, receiver.port), timeout=10) as sock:
                sock.sendall(head.encode())
                # The server closes its end: an empty read, not our own 10 s timeout.
                assert sock.recv(4096) == b""
        ledger.bad_input("webhook call", 3)
        answer = requests.post(
            receiver.url(WEBHOOK_SECRET), json={**good, "status": "done"}, timeout=5
        )
        assert answer.status_code == 200
    cut = [r.getMessage() for r in caplog.records if "idle" in r.getMessage()]
    assert len(cut) == 3 and all(WEBHOOK_SECRET not in m for m in cut)
    assert len(WebhookSpool(path=spool_path).read_after(0)) == 1


def test_a_keep_alive_connection_closed_after_its_answer_is_no_warning(tmp_path, caplog):
    """Tec.Delivery's client, like any pooled HTTP/1.1 client, keeps the connection open after
    its POST; the receiver closes it when idle, and that is the normal end of a connection,
    not a peer that stopped sending: a warning per notification would bury the real ones."""
    spool_path = str(tmp_path / "webhooks.sqlite")
    good = {"event": "products.processed", "request_id": "r", "status": "done"}
    with WebhookReceiver(WEBHOOK_SECRET, spool_path, idle_timeout_seconds=0.5) as receiver:
        connection = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
        for n in range(2):
            body = json.dumps({**good, "request_id": f"r{n}", "external_ids": ["a"]})
            connection.request("POST", f"/tec-delivery/webhook?token={WEBHOOK_SECRET}", body=body)
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["duplicate"] is False
        assert connection.sock.recv(1) == b""  # the server closed it, idle
        connection.close()
    assert [r.getMessage() for r in caplog.records if "idle" in r.getMessage()] == []
    assert len(WebhookSpool(path=spool_path).read_after(0)) == 2


def test_a_server_echoing_the_webhook_url_does_not_put_its_secret_in_duckdb(hooked, ledger):
    """Tec.Delivery's error text may quote the request, webhook URL included; that body is
    stored in push_batches. The leak guard greps DuckDB for the secret when this test ends."""
    platform = hooked
    echoed = {"status": "error", "message": f"cannot reach webhook {platform.tec.url}"}
    url = platform.resources["tec_delivery"].webhook_url.get_value()
    platform.tec.inject(
        status=400,
        body={**echoed, "message": f"webhook {url} unreachable from our side"},
        times=1,
        match=lambda body: not body["payload"][0].get("is_category"),
    )
    ledger.fault("Tec.Delivery echoes the webhook URL in an error")
    assert platform.run("full_resync").success
    bodies = platform.query("SELECT response_body FROM push_batches WHERE http_status = 400")
    assert bodies and "unreachable from our side" in bodies[0][0]


def test_a_late_notification_about_an_older_push_does_not_hide_the_current_one(
    platform, tmp_path, ledger
):
    """Tec.Delivery finishes out of order: a one-item re-push (a price) can be done before
    the big batch with images that carried the item's previous version. Both notifications
    in one ingestion must still mark the item processed for its current content."""
    spool_path = str(tmp_path / "webhooks.sqlite")
    platform.resources["webhook_spool"] = WebhookSpool(path=spool_path)
    assert platform.run("full_resync").success
    product = platform.catalog.products()[0]["id"]
    platform.catalog.upsert_product({"id": product, "price": 4321})
    assert platform.run("incremental_sync").success
    old, new = [
        r for r in platform.tec.requests if r["status"] == 200 and product in r["external_ids"]
    ]

    spool.append(spool_path, "products.processed", new["request_id"], "done", [product])
    spool.append(spool_path, "products.processed", old["request_id"], "done", old["external_ids"])
    ledger.fault("notifications out of order")
    meta = ingest(platform)
    assert meta["new_notifications"] == 2 and meta["unmatched_notifications"] == 0
    assert platform.query(
        "SELECT processing_status = 'done' AND processed_batch_id = last_batch_id "
        "FROM tec_delivery_products WHERE external_id = ?",
        [product],
    ) == [(True,)]


def test_a_refused_edit_does_not_orphan_the_notification_about_what_was_delivered(
    platform, tmp_path, ledger
):
    """What Tec.Delivery holds is still the delivered version when an edit is refused: the
    notification about that delivery counts, and its batch stays in the journal."""
    spool_path = str(tmp_path / "webhooks.sqlite")
    platform.resources["webhook_spool"] = WebhookSpool(path=spool_path)
    assert platform.run("full_resync").success
    product = platform.catalog.products()[0]["id"]
    [delivered] = [r for r in platform.tec.requests if product in r["external_ids"]]
    platform.tec.reject_ids.add(product)
    platform.catalog.upsert_product({"id": product, "price": 4321})
    assert not platform.run("incremental_sync", raise_on_error=False).success

    spool.append(spool_path, "products.processed", delivered["request_id"], "done", [product])
    ledger.fault("notification after a refused edit")
    meta = ingest(platform)
    assert meta["unmatched_notifications"] == 0
    assert platform.query(
        "SELECT processing_status = 'done' AND processed_batch_id = last_batch_id, "
        "last_error IS NOT NULL FROM tec_delivery_products WHERE external_id = ?",
        [product],
    ) == [(True, True)]
