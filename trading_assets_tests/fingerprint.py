"""A digest of every table of the platform, to prove that a refused input changed nothing."""

from __future__ import annotations

import psycopg
from psycopg import sql

SCHEMAS = ("market", "core_energy", "catalog", "ops")


def table_fingerprints(conn: psycopg.Connection) -> dict[str, str]:
    """md5 of each table's rows (as text, in a stable order), keyed `schema.table`."""
    tables = conn.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and table_schema = any(%s) order by 1, 2",
        (list(SCHEMAS),),
    ).fetchall()
    digests = {}
    for schema, table in tables:
        query = sql.SQL("select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {} t").format(
            sql.Identifier(schema, table)
        )
        digests[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]
    return digests


def changed_tables(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
