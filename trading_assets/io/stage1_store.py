"""The Stage 1 tables: spool replay (statement by statement, as the client's role), the role, and reports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.spool import SpoolStatement, read_spool
from trading_assets.io.postgres import filled_scratch_table

APP_ROLE = "stage1_app"
REPLAY_COUNTS = {
    "table": pl.String,
    "landed": pl.Int64,
    "already_present": pl.Int64,
    "refused": pl.Int64,
    "waiting": pl.Int64,
}
_OUTCOMES = {
    "statement_sha256": pl.String,
    "file_sha256": pl.String,
    "file_name": pl.String,
    "position": pl.Int32,
    "line": pl.Int32,
    "target_table": pl.String,
    "statement": pl.String,
    "outcome": pl.String,
    "reason": pl.String,
    "sqlstate": pl.String,
}


@dataclass
class Replay:
    """What one replay did, statement by statement (sha256 -> outcome row), and its counts."""

    rows: dict[str, dict] = field(default_factory=dict)
    tally: list[tuple[str, str]] = field(default_factory=list)  # (table, landed | already_present | refused)

    def counts(self, conn: psycopg.Connection) -> pl.DataFrame:
        waiting = pl.DataFrame(
            conn.execute(
                "select coalesce(target_table, '(none)'), count(*) from stage1.spool_statements "
                "where outcome = 'waiting' group by 1"
            ).fetchall(),
            schema={"table": pl.String, "waiting": pl.Int64},
            orient="row",
        )
        done = (
            pl.DataFrame(self.tally, schema={"table": pl.String, "kind": pl.String}, orient="row")
            .group_by("table")
            .agg(*(pl.col("kind").eq(kind).sum().cast(pl.Int64).alias(kind) for kind in list(REPLAY_COUNTS)[1:4]))
        )
        return (
            done.join(waiting, on="table", how="full", coalesce=True)
            .fill_null(0)
            .select(list(REPLAY_COUNTS))
            .cast(REPLAY_COUNTS)
            .sort("table")
        )


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replayed(conn: psycopg.Connection, digest: str) -> bool:
    return conn.execute("select 1 from stage1.spool_replays where file_sha256 = %s", (digest,)).fetchone() is not None


def replay_spool(conn: psycopg.Connection, file_name: str | None, data: bytes | None) -> pl.DataFrame:
    """Retry every waiting statement, then replay the file (`data`, once by content), each statement in its own
    savepoint as the client's role; keep every statement's outcome. Returns counts by table: landed and (of the
    file) already present and refused by this replay; waiting after it."""
    replay = Replay()
    waiting = conn.execute(
        "select statement_sha256, file_sha256, file_name, position, line, target_table, statement "
        "from stage1.spool_statements where outcome = 'waiting' order by first_seen, file_name, position"
    ).fetchall()
    for digest, file_digest, name, position, line, table, text in waiting:
        statement = SpoolStatement(position, line, text, table, None)
        _run(conn, replay, statement, file_digest, name)
    digest = file_sha256(data) if data is not None else None
    statements = []
    if data is not None and not replayed(conn, digest):
        statements = read_spool(data.decode("utf-8", errors="replace"))
        known = dict(
            conn.execute(
                "select statement_sha256, outcome from stage1.spool_statements where statement_sha256 = any(%s)",
                ([s.sha256 for s in statements],),
            ).fetchall()
        )
        for statement in statements:
            seen = replay.rows.get(statement.sha256, {}).get("outcome") or known.get(statement.sha256)
            if seen == "landed":
                replay.tally.append((statement.table or "(none)", "already_present"))
            elif seen == "waiting":
                continue  # retried above (it is one statement, whichever file spooled it)
            elif statement.refusal is not None:
                replay.rows[statement.sha256] = _outcome(statement, digest, file_name, "refused", statement.refusal)
                replay.tally.append((statement.table or "(none)", "refused"))
            else:
                _run(conn, replay, statement, digest, file_name)
    _record(conn, replay)
    counts = replay.counts(conn)
    conn.execute(
        "insert into stage1.spool_replays (file_sha256, file_name, statements, landed, waiting_after) "
        "values (%s, %s, %s, %s, %s) on conflict (file_sha256) do nothing",
        (
            digest if statements else None,
            file_name,
            len(statements),
            int(counts["landed"].sum()),
            int(counts["waiting"].sum()),
        ),
    )
    return counts


def _outcome(statement: SpoolStatement, file_digest: str, file_name: str, outcome: str, reason: str | None) -> dict:
    return {
        "statement_sha256": statement.sha256,
        "file_sha256": file_digest,
        "file_name": file_name,
        "position": statement.position,
        "line": statement.line,
        "target_table": statement.table,
        "statement": statement.text,
        "outcome": outcome,
        "reason": reason,
        "sqlstate": None,
    }


def _run(conn: psycopg.Connection, replay: Replay, statement: SpoolStatement, file_digest: str, name: str) -> None:
    """Run one statement in a savepoint as the client's role; its outcome is landed or waiting (with why)."""
    try:
        # The statement parsed as exactly one INSERT (compute.spool), so it is sent as it is.
        conn.execute(
            f"savepoint spool_statement; set local role {APP_ROLE}; set local search_path = stage1; {statement.text}"
        )
        conn.execute("reset role; reset search_path; release savepoint spool_statement")
        row = _outcome(statement, file_digest, name, "landed", None)
        replay.tally.append((statement.table or "(none)", "landed"))
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        conn.execute("rollback to savepoint spool_statement; release savepoint spool_statement")
        row = _outcome(statement, file_digest, name, "waiting", str(exc.diag.message_primary or exc).strip())
        row["sqlstate"] = exc.sqlstate
    replay.rows[statement.sha256] = row


def _record(conn: psycopg.Connection, replay: Replay) -> None:
    if not replay.rows:
        return
    frame = pl.DataFrame(list(replay.rows.values()), schema=_OUTCOMES, orient="row")
    filled_scratch_table(
        conn, "spool_outcomes", "(like stage1.spool_statements including defaults)", frame, list(_OUTCOMES)
    )
    conn.execute(
        """
        insert into stage1.spool_statements as s (statement_sha256, file_sha256, file_name, position, line,
            target_table, statement, outcome, reason, sqlstate, attempts, last_tried, landed_at)
        select statement_sha256, file_sha256, file_name, position, line, target_table, statement, outcome, reason,
               sqlstate, case when outcome = 'refused' then 0 else 1 end,
               case when outcome = 'refused' then null else now() end,
               case when outcome = 'landed' then now() end
        from spool_outcomes
        on conflict (statement_sha256) do update set
            outcome = excluded.outcome, reason = excluded.reason, sqlstate = excluded.sqlstate,
            attempts = s.attempts + excluded.attempts, last_tried = excluded.last_tried,
            landed_at = excluded.landed_at
        """
    )


def waiting_before(conn: psycopg.Connection) -> int | None:
    """The waiting count after the previous replay (None: no replay yet)."""
    row = conn.execute("select waiting_after from stage1.spool_replays order by replay_id desc limit 1").fetchone()
    return row[0] if row else None


def set_app_password(conn: psycopg.Connection, password: str) -> None:
    """Let the client's role log in with `password`; only its SCRAM hash is sent to the server (and its logs)."""
    hashed = conn.pgconn.encrypt_password(password.encode(), APP_ROLE.encode(), b"scram-sha-256").decode()
    conn.execute(sql.SQL("alter role {} login password {}").format(sql.Identifier(APP_ROLE), sql.Literal(hashed)))
