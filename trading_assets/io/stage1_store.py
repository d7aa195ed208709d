"""The Stage 1 tables: spool replay (statement by statement, as the client's role), the role, and reports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.spool import SpoolStatement, read_spool

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
    """What one replay did: outcomes not yet recorded (sha256 -> row), every outcome it reached, and a tally."""

    pending: dict[str, dict] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    tally: list[tuple[str, str]] = field(default_factory=list)  # (table, landed | already_present | refused)

    def add(self, row: dict, counted: str | None = None) -> None:
        self.pending[row["statement_sha256"]] = row
        self.outcomes[row["statement_sha256"]] = row["outcome"]
        if counted:
            self.tally.append((row["target_table"] or "(none)", counted))

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


def replay_spool(conn: psycopg.Connection, files: list[tuple[str, bytes]]) -> pl.DataFrame:
    """Replay each spool file (name, content) not replayed before, statement by statement, each in its own
    savepoint as the client's role, and retry every waiting statement until a pass lands nothing more (a
    statement waits for its parent row, wherever that comes from). Every statement's outcome is kept.
    Returns counts by table: landed, and (of the files) already present and refused, by this replay; waiting
    after it."""
    replay = Replay()
    waited = conn.execute("select exists (select from stage1.spool_statements where outcome = 'waiting')").fetchone()[0]
    replayed_files = []
    for name, data in files:
        digest = file_sha256(data)
        if replayed(conn, digest) or digest in replayed_files:
            continue
        statements = read_spool(data.decode("utf-8", errors="replace"))
        known = dict(
            conn.execute(
                "select statement_sha256, outcome from stage1.spool_statements where statement_sha256 = any(%s)",
                ([s.sha256 for s in statements],),
            ).fetchall()
        )
        for statement in statements:
            seen = replay.outcomes.get(statement.sha256) or known.get(statement.sha256)
            if seen == "landed":
                replay.tally.append((statement.table or "(none)", "already_present"))
            elif seen == "refused":
                replay.tally.append((statement.table or "(none)", "refused"))
            elif seen is None and statement.refusal is not None:
                replay.add(_outcome(statement, digest, name, "refused", statement.refusal), "refused")
            elif seen is None:
                _run(conn, replay, statement, digest, name)
            # waiting: one statement whichever file spooled it; the retries run it
        replayed_files.append(digest)
        conn.execute(
            "insert into stage1.spool_replays (file_sha256, file_name, statements, landed, waiting_after) "
            "values (%s, %s, %s, 0, 0)",
            (digest, name, len(statements)),
        )
    # A waiting statement can land only once a parent did: retry while a pass (or the files) landed something.
    retry = waited or any(kind == "landed" for _, kind in replay.tally)
    while retry:
        retry = _retry_waiting(conn, replay) > 0
    _record(conn, replay)
    counts = replay.counts(conn)
    landed, waiting = int(counts["landed"].sum()), int(counts["waiting"].sum())
    if replayed_files:
        conn.execute(
            "update stage1.spool_replays set landed = %s, waiting_after = %s where file_sha256 = any(%s)",
            (landed, waiting, replayed_files),
        )
    else:
        conn.execute("insert into stage1.spool_replays (landed, waiting_after) values (%s, %s)", (landed, waiting))
    return counts


def _retry_waiting(conn: psycopg.Connection, replay: Replay) -> int:
    """Run every waiting statement once more, oldest first; returns how many landed."""
    _record(conn, replay)
    waiting = conn.execute(
        "select file_sha256, file_name, position, line, target_table, statement from stage1.spool_statements "
        "where outcome = 'waiting' order by first_seen, file_name, position"
    ).fetchall()
    landed = 0
    for file_digest, name, position, line, table, text in waiting:
        statement = SpoolStatement(position, line, text, table, None)
        landed += _run(conn, replay, statement, file_digest, name)
    return landed


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


def _run(conn: psycopg.Connection, replay: Replay, statement: SpoolStatement, file_digest: str, name: str) -> bool:
    """Run one statement in a savepoint as the client's role; its outcome is landed or waiting (with why)."""
    try:
        with conn.transaction():  # a savepoint inside the run's transaction
            # The statement parsed as exactly one INSERT … VALUES (compute.spool), so it is sent as it is.
            conn.execute(f"set local role {APP_ROLE}; set local search_path = stage1; {statement.text}")
            conn.execute("reset role; reset search_path")
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        row = _outcome(statement, file_digest, name, "waiting", str(exc.diag.message_primary or exc).strip())
        replay.add({**row, "sqlstate": exc.sqlstate})
        return False
    replay.add(_outcome(statement, file_digest, name, "landed", None), "landed")
    return True


def _record(conn: psycopg.Connection, replay: Replay) -> None:
    """Store the outcomes not yet stored (an attempt counts once)."""
    if not replay.pending:
        return
    rows = [[row[c] for c in _OUTCOMES] for row in replay.pending.values()]
    replay.pending.clear()
    with conn.cursor() as cur:
        cur.executemany(
            """
            insert into stage1.spool_statements as s (statement_sha256, file_sha256, file_name, position, line,
                target_table, statement, outcome, reason, sqlstate, attempts, last_tried, landed_at)
            select v.*, case when v.outcome = 'refused' then 0 else 1 end,
                   case when v.outcome = 'refused' then null else now() end,
                   case when v.outcome = 'landed' then now() end
            from (values (%s, %s, %s, %s::integer, %s::integer, %s, %s, %s, %s, %s)) as v (statement_sha256,
                file_sha256, file_name, position, line, target_table, statement, outcome, reason, sqlstate)
            on conflict (statement_sha256) do update set
                outcome = excluded.outcome, reason = excluded.reason, sqlstate = excluded.sqlstate,
                attempts = s.attempts + excluded.attempts, last_tried = excluded.last_tried,
                landed_at = excluded.landed_at
            """,
            rows,
        )


def waiting_before(conn: psycopg.Connection) -> int | None:
    """The waiting count after the previous replay (None: no replay yet)."""
    row = conn.execute("select waiting_after from stage1.spool_replays order by replay_id desc limit 1").fetchone()
    return row[0] if row else None


def set_app_password(conn: psycopg.Connection, password: str) -> None:
    """Let the client's role log in with `password`; only its SCRAM hash is sent to the server (and its logs)."""
    hashed = conn.pgconn.encrypt_password(password.encode(), APP_ROLE.encode(), b"scram-sha-256").decode()
    conn.execute(sql.SQL("alter role {} login password {}").format(sql.Identifier(APP_ROLE), sql.Literal(hashed)))
