"""Alerts delivered to a real HTTP listener on 127.0.0.1 (webhook and Telegram's API shape), the severity
threshold, a dead channel, and the run-failure and check-failure sensors."""

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import psycopg
import pytest

from trading_assets.config import Settings
from trading_assets.defs.market.assets import PRICE_HISTORIES
from trading_assets.defs.metadata.assets import DIM_SERIES
from trading_assets.defs.metadata.checks import SERIES_CHECKS
from trading_assets.defs.ops.alerts import build_alert_sensors, check_failure_alerts, run_failure_alert
from trading_assets.io.alerts import Alert, send_alert
from trading_assets_tests.conftest import Platform

TOKEN = "123456:secret-token-never-logged"


class Listener:
    """An HTTP server on a free local port that records every POST (path and JSON body)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alerts(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("select severity, channel, status, error from ops.alerts order by alert_id").fetchall()


def test_webhook_gets_alerts_at_or_above_the_threshold(
    settings: Settings, database_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    configured = replace(settings, alert_url=f"{listener.url}/hook", alert_min_severity="ERROR")
    assert send_alert(configured, database_url, Alert("ERROR", "Run failed", "details", "test")) == ["sent"]
    assert send_alert(configured, database_url, Alert("WARNING", "Gap", "x", "test")) == ["below_threshold"]
    strict = replace(configured, alert_min_severity="CRITICAL")
    assert send_alert(strict, database_url, Alert("CRITICAL", "Checks FAILED", "ohlc", "test")) == ["sent"]
    assert listener.received == [
        ("/hook", {"severity": "ERROR", "title": "Run failed", "body": "details", "source": "test"}),
        ("/hook", {"severity": "CRITICAL", "title": "Checks FAILED", "body": "ohlc", "source": "test"}),
    ]
    assert [row[:3] for row in _alerts(conn)] == [
        ("ERROR", "webhook", "sent"),
        ("WARNING", "webhook", "below_threshold"),
        ("CRITICAL", "webhook", "sent"),
    ]


def test_telegram_message_and_the_token_stays_out_of_records(
    settings: Settings, database_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    configured = replace(settings, telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api_url=listener.url)
    assert TOKEN not in repr(configured)
    assert send_alert(configured, database_url, Alert("CRITICAL", "Stats <FAILED>", "a & b", "test")) == ["sent"]
    [(path, body)] = listener.received
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body == {
        "chat_id": "42",
        "text": "\U0001f534 <b>Stats &lt;FAILED&gt;</b>\n\na &amp; b",
        "parse_mode": "HTML",
    }

    dead = replace(configured, telegram_api_url=f"http://127.0.0.1:{_closed_port()}")
    assert send_alert(dead, database_url, Alert("ERROR", "Run failed", "", "test")) == ["failed"]
    severity, channel, status, error = _alerts(conn)[-1]
    assert (severity, channel, status) == ("ERROR", "telegram", "failed")
    assert "Connection refused" in error and TOKEN not in error


def test_without_a_channel_alerts_are_only_recorded(
    settings: Settings, database_url: str, conn: psycopg.Connection
) -> None:
    assert send_alert(settings, database_url, Alert("INFO", "Weekly digest", "", "test")) == ["logged"]
    assert _alerts(conn) == [("INFO", "log", "logged", None)]


def test_run_failure_sensor_alerts_and_a_dead_listener_does_not_break_it(
    platform: Platform, conn: psycopg.Connection, listener: Listener
) -> None:
    missing = {"files": [{"path": "/nonexistent/prices.csv", "symbol": "NOPE"}]}

    def failed_run() -> dg.ExecuteInProcessResult:
        result = platform.run(
            dg.AssetSelection.assets(PRICE_HISTORIES),
            partition_range=("2024-01-01", "2024-01-01"),
            ops={"market__price_histories": missing},
            raise_on_error=False,
        )
        assert not result.success
        return result

    def sense(result: dg.ExecuteInProcessResult, url: str) -> None:
        [on_run_failure, _] = build_alert_sensors(replace(platform.settings, alert_url=url))
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_instance=platform.instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        on_run_failure(context)

    first, second = failed_run(), failed_run()
    sense(first, f"{listener.url}/hook")
    sense(first, f"{listener.url}/hook")  # the same failure seen again (by the CLI, or a sensor restart)
    sense(second, f"{listener.url}/hook")  # the same condition again within the quiet period: grouped
    [(_, body)] = listener.received
    assert body["severity"] == "ERROR" and body["title"] == "Run failed: __ephemeral_asset_job__"
    assert first.run_id in body["body"] and "/nonexistent/prices.csv" in body["body"]
    platform.settings = replace(platform.settings, alert_quiet_minutes=0)
    sense(failed_run(), f"http://127.0.0.1:{_closed_port()}/hook")
    assert [row[:3] for row in _alerts(conn)] == [
        ("ERROR", "webhook", "sent"),
        ("ERROR", "log", "grouped"),
        ("ERROR", "webhook", "failed"),
    ]


def test_one_alert_per_failure_with_its_severity() -> None:
    def evaluation(name: str, passed: bool, severity: dg.AssetCheckSeverity, blocking: bool) -> dg.AssetCheckEvaluation:
        return dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(["market", "x"]), check_name=name, passed=passed, severity=severity, blocking=blocking
        )

    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    evaluations = [
        evaluation("ohlc", False, error, True),
        evaluation("dup", False, error, True),
        evaluation("bounds", False, warn, False),
        evaluation("fine", True, error, True),
        evaluation("loose", False, error, False),
    ]
    # Failed blocking ERROR checks failed their run: its one alert names them, CRITICAL.
    run = dg.DagsterRun(job_name="refresh_market", run_id="r1")
    failure = run_failure_alert(run, evaluations, [], "")
    assert (failure.severity, failure.body, failure.dedupe_key) == (
        "CRITICAL",
        "run r1\nblocking check failed: market/x:dup\nblocking check failed: market/x:ohlc",
        "run:r1",
    )
    quiet = run_failure_alert(run, evaluations[2:], [], "step failed")
    assert (quiet.severity, quiet.body) == ("ERROR", "run r1\nstep failed")
    # The other failed checks: one alert per run and severity.
    alerts = check_failure_alerts([("r1", e) for e in evaluations], "test")
    assert sorted((a.severity, a.body, a.dedupe_key) for a in alerts) == [
        ("ERROR", "run r1\nmarket/x:loose", "checks:r1:ERROR"),
        ("WARNING", "run r1\nmarket/x:bounds", "checks:r1:WARNING"),
    ]


def test_check_failure_sensor_reads_new_evaluations_once(
    platform: Platform, conn: psycopg.Connection, listener: Listener
) -> None:
    platform.materialize(DIM_SERIES)
    result = platform.run(dg.AssetSelection.checks(*SERIES_CHECKS), raise_on_error=False)
    # Series described but none observed yet: neither observed nor fresh (WARN), and the blocking checks of
    # the map and view, never built, fail their run (that run's own alert names them).
    failed = sorted(
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and not e.blocking
    )
    assert failed
    settings = replace(platform.settings, alert_url=f"{listener.url}/hook", alert_min_severity="INFO")
    [_, on_check_failure] = build_alert_sensors(settings)
    context = dg.build_sensor_context(instance=platform.instance)
    on_check_failure(context)
    assert sorted(name for _, body in listener.received for name in body["body"].split("\n")[1:]) == failed
    on_check_failure(dg.build_sensor_context(instance=platform.instance, cursor=context.cursor))
    assert len(listener.received) == len({body["severity"] for _, body in listener.received})  # nothing twice
