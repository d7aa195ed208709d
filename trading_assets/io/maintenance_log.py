"""ops.maintenance_log: one row per piece of maintenance done (what, on what, when, and what it cost)."""

import json
from datetime import datetime

import psycopg


def log_maintenance(
    conn: psycopg.Connection,
    task: str,
    target: str,
    started: datetime,
    *,
    rows: int | None = None,
    bytes_before: int | None = None,
    bytes_after: int | None = None,
    detail: dict | None = None,
) -> None:
    """Record `task` done on `target` since `started` (finished now)."""
    conn.execute(
        "insert into ops.maintenance_log (task, target, started_at, finished_at, rows, bytes_before, bytes_after, "
        "outcome, detail) values (%s, %s, %s, now(), %s, %s, %s, 'done', %s)",
        (task, target, started, rows, bytes_before, bytes_after, json.dumps(detail or {}, default=str)),
    )
