"""Incident bookkeeping (pure) and delivery to a real webhook receiver on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from catalog_assets.notifier import Notifier, incident_transitions
from catalog_assets_tests.faults.test_alerts import SlackHook


def test_one_message_per_incident_and_one_on_recovery():
    first = incident_transitions({}, {"check:a": "3 quarantined", "check:b": None})
    assert first.opened == {"check:a": "3 quarantined"} and first.resolved == {}
    open_incidents = first.opened
    again = incident_transitions(open_incidents, {"check:a": "4 quarantined", "check:b": None})
    assert again.opened == {} and again.resolved == {}
    unobserved = incident_transitions(open_incidents, {"check:b": None})
    assert unobserved.opened == {} and unobserved.resolved == {}
    recovered = incident_transitions(open_incidents, {"check:a": None})
    assert recovered.resolved == {"check:a": "3 quarantined"} and recovered.opened == {}


def test_posts_slack_compatible_json_to_the_webhook():
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert Notifier(webhook_url=f"http://127.0.0.1:{server.server_port}/hook").send(
            "sync failed"
        )
        assert received == [{"text": "sync failed"}]
        assert not Notifier(webhook_url="http://127.0.0.1:9/unreachable", timeout_seconds=1).send(
            "x"
        )
    finally:
        server.shutdown()


def test_without_a_webhook_the_alert_is_a_log_line(caplog):
    assert Notifier().send("outlet msk-001 silent")
    assert "ALERT outlet msk-001 silent" in caplog.text


def test_a_failing_alert_channel_does_not_log_the_secret_in_its_url(caplog):
    """A Slack or Mattermost incoming-webhook URL is the credential (the secret is in its path)."""
    secret = "xoxHOOK-9c1d-SECRET-path-77aa"
    hook = SlackHook()
    hook.up = False  # answers 503
    try:
        url = f"http://127.0.0.1:{hook.server.server_port}/services/T0001/B0002/{secret}"
        assert not Notifier(webhook_url=url, timeout_seconds=5).send("job failed")
        assert not Notifier(
            webhook_url=f"http://127.0.0.1:9/hooks/{secret}", timeout_seconds=1
        ).send("job failed")
    finally:
        hook.server.shutdown()
    assert "alert to http://127.0.0.1" in caplog.text and secret not in caplog.text
