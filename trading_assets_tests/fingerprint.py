"""A digest of every table of the platform, to prove that a refused input changed nothing, or that two
ways of reaching a state reached the same rows."""

from __future__ import annotations

import psycopg
from psycopg import sql

SCHEMAS = ("market", "core_energy", "catalog", "ops")
# When a row was written, not what it holds.
WRITE_TIMES = ("built_at", "loaded_at", "created_at", "rejected_at", "recorded_at", "updated_at")


def table_fingerprints(
    conn: psycopg.Connection, schemas: tuple[str, ...] = SCHEMAS, ignore: tuple[str, ...] = ()
) -> dict[str, str]:
    """md5 of each table's rows (as JSON without the `ignore` columns, in a stable order), keyed `schema.table`."""
    tables = conn.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and table_schema = any(%s) order by 1, 2",
        (list(schemas),),
    ).fetchall()
    digests = {}
    for schema, table in tables:
        query = sql.SQL(
            "select md5(coalesce(string_agg(r::text, '|' order by r::text), '')) "
            "from (select to_jsonb(t) - %s::text[] as r from {} t) rows"
        ).format(sql.Identifier(schema, table))
        digests[f"{schema}.{table}"] = conn.execute(query, (list(ignore),)).fetchone()[0]
    return digests


def stored_rows(conn: psycopg.Connection, table: str, ignore: tuple[str, ...] = WRITE_TIMES) -> list[tuple]:
    """The rows of `table` (schema.table) without the `ignore` columns, ordered by every column."""
    schema, name = table.split(".")
    columns = [
        column
        for (column,) in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "order by ordinal_position",
            (schema, name),
        )
        if column not in ignore
    ]
    query = sql.SQL("select {} from {} order by {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Identifier(schema, name),
        sql.SQL(", ").join(sql.Literal(position) for position in range(1, len(columns) + 1)),
    )
    return conn.execute(query).fetchall()


def relation_file(conn: psycopg.Connection, table: str) -> int:
    """The file node of `table`: a TRUNCATE gives the table a new one."""
    return conn.execute("select pg_relation_filenode(%s::regclass)", (table,)).fetchone()[0]


def changed_tables(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
