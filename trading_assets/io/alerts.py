"""Alerts: recorded in ops.alerts, and delivered to Telegram and/or a webhook at or above the threshold.

CRITICAL is always delivered. A dead channel never fails the caller: the alert stays recorded with status
`failed` and the reason, with any token scrubbed from it. A repeat of the same condition (`group_key`) within the
quiet period is recorded as `grouped` and not delivered. Delivery never depends on the database: when it cannot be
reached the alert is delivered anyway and its record waits in a file under the home until it can.
"""

from __future__ import annotations

import html
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from trading_assets.config import SEVERITIES, Settings
from trading_assets.io.postgres import connect

_TIMEOUT_SECONDS = 5.0
# Exception classes that mean the database could not be reached (psycopg's, SQLAlchemy's, the pool's).
DATABASE_UNREACHABLE = frozenset({"OperationalError", "PoolTimeout"})
_EMOJI = {"CRITICAL": "\U0001f534", "ERROR": "\U0001f534", "WARNING": "\U0001f7e1", "INFO": "\U0001f535"}


@dataclass(frozen=True)
class Alert:
    severity: str
    title: str
    body: str
    source: str
    # The event the alert is about (a failed run, a run's failed checks): it is raised once, whoever notices
    # it first (a sensor, or the CLI that ran the run).
    dedupe_key: str | None = None
    # The condition the alert reports (which checks failed, which assets are stale): repeats are grouped.
    group_key: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")


def should_deliver(severity: str, threshold: str) -> bool:
    return severity == "CRITICAL" or SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


def _post(url: str, payload: dict) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
        response.read()


def _deliveries(settings: Settings, alert: Alert) -> list[tuple[str, str, dict]]:
    """(channel, url, payload) for each configured channel."""
    targets = []
    if settings.telegram_bot_token and settings.telegram_chat_id:
        text = f"{_EMOJI[alert.severity]} <b>{html.escape(alert.title)}</b>\n\n{html.escape(alert.body)}"
        url = f"{settings.telegram_api_url.rstrip('/')}/bot{settings.telegram_bot_token}/sendMessage"
        targets.append(("telegram", url, {"chat_id": settings.telegram_chat_id, "text": text, "parse_mode": "HTML"}))
    if settings.alert_url:
        payload = {"severity": alert.severity, "title": alert.title, "body": alert.body, "source": alert.source}
        targets.append(("webhook", settings.alert_url, payload))
    return targets


def _scrub(text: str, settings: Settings) -> str:
    for secret in (settings.telegram_bot_token, settings.alert_url):
        if secret:
            text = text.replace(secret, "***")
    return text


def _claim(conn: psycopg.Connection, key: str) -> bool:
    """Whether this caller is the first to raise the alert of `key`."""
    claimed = conn.execute(
        "insert into ops.alert_claims (dedupe_key) values (%s) on conflict do nothing returning dedupe_key", (key,)
    )
    return claimed.fetchone() is not None


def _raised_lately(conn: psycopg.Connection, alert: Alert, quiet_minutes: int) -> bool:
    """Whether the condition of `alert` was already reported within the quiet period."""
    found = conn.execute(
        "select 1 from ops.alerts where group_key = %s and status <> 'grouped' "
        "and created_at > now() - make_interval(mins => %s) limit 1",
        (alert.group_key, quiet_minutes),
    )
    return found.fetchone() is not None


def _deliver(settings: Settings, alert: Alert) -> list[tuple]:
    """Deliver `alert` to every channel: (channel, status, error, delivered_at) per channel."""
    targets = _deliveries(settings, alert)
    if not targets:
        return [("log", "logged", None, None)]
    rows = []
    for channel, target, payload in targets:
        if not should_deliver(alert.severity, settings.alert_min_severity):
            rows.append((channel, "below_threshold", None, None))
            continue
        try:
            _post(target, payload)
            rows.append((channel, "sent", None, datetime.now(UTC)))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            rows.append((channel, "failed", _scrub(f"{type(exc).__name__}: {exc}", settings), None))
    return rows


_RECORD = (
    "insert into ops.alerts (created_at, severity, title, body, source, group_key, channel, status, error, "
    "delivered_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _record(conn: psycopg.Connection, alert: Alert, rows: list[tuple]) -> None:
    now = datetime.now(UTC)
    conn.cursor().executemany(
        _RECORD, [(now, alert.severity, alert.title, alert.body, alert.source, alert.group_key, *r) for r in rows]
    )


def unrecorded_path(settings: Settings) -> Path:
    """Alerts delivered while the database could not be reached, waiting to be recorded (JSON lines)."""
    return settings.home / "alerts_unrecorded.jsonl"


def _keep_unrecorded(settings: Settings, alert: Alert, rows: list[tuple], reason: str) -> None:
    path = unrecorded_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat()
    with path.open("a") as spool:
        for channel, status, error, delivered_at in rows:
            record = {
                "created_at": now, "severity": alert.severity, "title": alert.title, "body": alert.body,
                "source": alert.source, "group_key": alert.group_key, "channel": channel, "status": status,
                "error": "; ".join(filter(None, [error, f"recorded late: {reason}"])),
                "delivered_at": delivered_at.isoformat() if delivered_at else None,
            }  # fmt: skip
            spool.write(json.dumps(record) + "\n")


def _record_kept(conn: psycopg.Connection, settings: Settings) -> None:
    """Record the alerts kept on disk while the database was unreachable."""
    path = unrecorded_path(settings)
    if not path.exists():
        return
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    columns = ("created_at", "severity", "title", "body", "source", "group_key", "channel", "status", "error")
    conn.cursor().executemany(_RECORD, [(*(r[c] for c in columns), r["delivered_at"]) for r in kept])
    path.unlink()


def send_alert(settings: Settings, url: str | None, alert: Alert) -> list[str]:
    """Record `alert` (one row per channel, or one `logged` row with none) and deliver it; returns statuses
    (none when an alert about the same event was already raised; `grouped` for a repeat within the quiet
    period). `url` None, or a database that cannot be reached, still delivers."""
    rows: list[tuple] | None = None
    try:
        if url is None:
            raise psycopg.OperationalError("no database URL")
        with connect(url) as conn:
            _record_kept(conn, settings)
            if alert.dedupe_key is not None and not _claim(conn, alert.dedupe_key):
                return []
            if alert.group_key is not None and _raised_lately(conn, alert, settings.alert_quiet_minutes):
                rows = [("log", "grouped", None, None)]
            else:
                conn.commit()  # the claim holds even if a channel hangs until its timeout
                rows = _deliver(settings, alert)
            _record(conn, alert, rows)
    except psycopg.OperationalError as exc:
        if rows is None:
            rows = _deliver(settings, alert)
        _keep_unrecorded(settings, alert, rows, _scrub(f"database unreachable ({exc})", settings).splitlines()[0])
    return [status for _, status, _, _ in rows]
