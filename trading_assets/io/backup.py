"""Table backups: each table's rows as its binary COPY stream (restorable with COPY … FROM … (FORMAT binary))
beside a manifest of its columns and types, in a new dated folder; nothing is ever overwritten."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from trading_assets.io.postgres import copy_out


def existing_tables(conn: psycopg.Connection, names: list[str], schemas: tuple[str, ...]) -> list[tuple[str, str]]:
    """(schema, table) of the tables named `names` in any of `schemas`."""
    return conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind = 'r' and c.relname = any(%s) and n.nspname = any(%s) order by 1, 2",
        (names, list(schemas)),
    ).fetchall()


def backup_tables(conn: psycopg.Connection, tables: list[tuple[str, str]], folder: Path, label: str) -> Path:
    """Write every (schema, table) of `tables` to a new folder `<folder>/<UTC time>_<label>`; returns it."""
    target = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}_{label}"
    target.mkdir(parents=True, exist_ok=False)
    manifest = {}
    for schema, table in tables:
        columns = conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            "where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum",
            (f"{schema}.{table}",),
        ).fetchall()
        stream = copy_out(conn, sql.SQL("select * from {}").format(sql.Identifier(schema, table)))
        (target / f"{schema}.{table}.pgcopy").write_bytes(stream)
        rows = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))).fetchone()[0]
        manifest[f"{schema}.{table}"] = {"rows": rows, "columns": [list(c) for c in columns]}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target
