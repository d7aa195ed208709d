"""Alerts: recorded in ops.alerts, and delivered to Telegram and/or a webhook at or above the threshold.

CRITICAL is always delivered. A dead channel never fails the caller: the alert stays recorded with status
`failed` and the reason, with any token scrubbed from it.
"""

from __future__ import annotations

import html
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from trading_assets.config import SEVERITIES, Settings
from trading_assets.io.postgres import connect

_TIMEOUT_SECONDS = 5.0
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


def _claim(url: str, key: str) -> bool:
    """Whether this caller is the first to raise the alert of `key`."""
    with connect(url) as conn:
        return (
            conn.execute(
                "insert into ops.alert_claims (dedupe_key) values (%s) on conflict do nothing returning dedupe_key",
                (key,),
            ).fetchone()
            is not None
        )


def send_alert(settings: Settings, url: str, alert: Alert) -> list[str]:
    """Record `alert` (one row per channel, or one `logged` row with none) and deliver it; returns statuses
    (none when an alert about the same event was already raised)."""
    if alert.dedupe_key is not None and not _claim(url, alert.dedupe_key):
        return []
    rows = []
    targets = _deliveries(settings, alert)
    if not targets:
        rows.append(("log", "logged", None, None))
    for channel, target, payload in targets:
        if not should_deliver(alert.severity, settings.alert_min_severity):
            rows.append((channel, "below_threshold", None, None))
            continue
        try:
            _post(target, payload)
            rows.append((channel, "sent", None, datetime.now(UTC)))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            rows.append((channel, "failed", _scrub(f"{type(exc).__name__}: {exc}", settings), None))
    with connect(url) as conn:
        conn.cursor().executemany(
            "insert into ops.alerts (severity, title, body, source, channel, status, error, delivered_at) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(alert.severity, alert.title, alert.body, alert.source, *row) for row in rows],
        )
    return [status for _, status, _, _ in rows]
