"""Retention by partitions: an expired partition is archived to zstd parquet (with a manifest of row counts and
checksums), the archive read back and compared, and only then the partition detached and dropped. No DELETE, so no
VACUUM afterwards. An archive can be re-attached; a write never resurrects rows of a dropped range by itself."""

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.config import ConfigError
from trading_assets.io.maintenance_log import log_maintenance
from trading_assets.io.postgres import copy_frame, read_typed

PERMANENT = "permanent"
_BOUND = re.compile(r"FOR VALUES FROM \('([0-9-]+)'\) TO \('([0-9-]+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    start: date
    end: date


@dataclass(frozen=True)
class Policy:
    table: str  # schema.table
    days: int | None  # None: permanent


def read_policies(path: Path) -> list[Policy]:
    """The `[tables]` of a retention TOML file: "schema.table" = days, or "permanent"."""
    try:
        entries = tomllib.loads(path.read_text()).get("tables", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the retention policies: {exc}") from exc
    policies = []
    for table, value in entries.items():
        if "." not in table:
            raise ConfigError(f"{path}: {table!r} must be schema.table")
        if value == PERMANENT:
            policies.append(Policy(table, None))
        elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
            policies.append(Policy(table, value))
        else:
            raise ConfigError(f'{path}: {table} = {value!r}: give a positive number of days or "{PERMANENT}"')
    return policies


def _identifier(qualified: str) -> sql.Composed:
    schema, name = qualified.split(".", 1)
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def partitions_of(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The range partitions of `table` (on a date), oldest first; a table not partitioned that way is refused."""
    rows = conn.execute(
        "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i join pg_class c on c.oid = i.inhrelid "
        "where i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    kind = conn.execute(
        "select p.partstrat from pg_partitioned_table p where p.partrelid = %s::regclass", (table,)
    ).fetchone()
    if kind is None or kind[0] != "r":
        raise ConfigError(f"{table} is not range-partitioned: retention drops partitions, it never deletes rows")
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match:
            found.append(Partition(name, date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))))
    return sorted(found, key=lambda p: p.start)


def expired(partitions: list[Partition], horizon: date) -> list[Partition]:
    """Partitions whose every day is before `horizon` (a partition straddling it stays whole)."""
    return [p for p in partitions if p.end <= horizon]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_partition(conn: psycopg.Connection, table: str, partition: Partition, folder: Path) -> dict:
    """Write the partition's rows to `folder`/<table>/<partition>.parquet (zstd), read it back and compare, and
    add it to the folder's manifest; returns the manifest entry."""
    schema_name = table.split(".", 1)[0]
    rows = read_typed(
        conn, sql.SQL("select * from {}.{}").format(sql.Identifier(schema_name), sql.Identifier(partition.name))
    )
    target = folder / table / f"{partition.name}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".parquet.partial")
    rows.write_parquet(scratch, compression="zstd")
    with scratch.open("rb") as handle:
        os.fsync(handle.fileno())
    back = pl.read_parquet(scratch)
    if back.height != rows.height or not back.equals(rows):
        scratch.unlink()
        raise RuntimeError(f"archive of {table} partition {partition.name} does not read back equal: not dropped")
    scratch.replace(target)
    entry = {
        "table": table,
        "partition": partition.name,
        "range_start": partition.start.isoformat(),
        "range_end": partition.end.isoformat(),
        "rows": rows.height,
        "file": str(target.relative_to(folder)),
        "sha256": file_sha256(target),
    }
    manifest = folder / "manifest.json"
    entries = json.loads(manifest.read_text()) if manifest.exists() else []
    entries = [e for e in entries if (e["table"], e["partition"]) != (table, partition.name)] + [entry]
    scratch_manifest = manifest.with_suffix(".json.partial")
    scratch_manifest.write_text(json.dumps(entries, indent=1))
    scratch_manifest.replace(manifest)
    return entry


def drop_partition(conn: psycopg.Connection, table: str, partition: Partition) -> None:
    schema_name = table.split(".", 1)[0]
    child = sql.SQL("{}.{}").format(sql.Identifier(schema_name), sql.Identifier(partition.name))
    conn.execute(sql.SQL("alter table {} detach partition {}").format(_identifier(table), child))
    conn.execute(sql.SQL("drop table {}").format(child))


def apply_policy(conn: psycopg.Connection, policy: Policy, folder: Path, today: date) -> list[dict]:
    """Archive then drop every partition of `policy.table` past its retention (none for a permanent table);
    partitions re-attached on purpose stay. Returns the archive entries made."""
    if policy.days is None:
        return []
    horizon = today - timedelta(days=policy.days)
    held = {n for (n,) in conn.execute(
        "select partition_name from ops.retention_archives where table_name = %s and reattached_at is not null",
        (policy.table,),
    )}  # fmt: skip
    made = []
    for partition in expired(partitions_of(conn, policy.table), horizon):
        if partition.name in held:
            continue
        started = datetime.now(UTC)
        schema_name = policy.table.split(".", 1)[0]
        (db_bytes,) = conn.execute(
            "select pg_total_relation_size(%s::regclass)", (f"{schema_name}.{partition.name}",)
        ).fetchone()
        entry = archive_partition(conn, policy.table, partition, folder)
        drop_partition(conn, policy.table, partition)
        conn.execute(
            "insert into ops.retention_archives (table_name, partition_name, range_start, range_end, rows, db_bytes, "
            "file, file_bytes, sha256) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                policy.table,
                partition.name,
                partition.start,
                partition.end,
                entry["rows"],
                db_bytes,
                entry["file"],
                (folder / entry["file"]).stat().st_size,
                entry["sha256"],
            ),
        )
        log_maintenance(
            conn, "retention", f"{policy.table}.{partition.name}", started, rows=entry["rows"], detail=entry
        )
        made.append(entry)
    return made


def dropped_ranges(conn: psycopg.Connection, table: str) -> list[tuple[date, date]]:
    """[start, end) ranges of `table` retention dropped and nobody re-attached."""
    return conn.execute(
        "select range_start, range_end from ops.retention_archives where table_name = %s "
        "group by partition_name, range_start, range_end having bool_and(reattached_at is null)",
        (table,),
    ).fetchall()


def without_dropped(conn: psycopg.Connection, table: str, rows: pl.DataFrame, day: str = "trade_date") -> pl.DataFrame:
    """`rows` minus those in a range retention dropped (a re-run never resurrects them; re-attach to ask)."""
    ranges = dropped_ranges(conn, table)
    if not ranges or rows.is_empty():
        return rows
    inside = pl.any_horizontal(pl.col(day).is_between(start, end, closed="left") for start, end in ranges)
    return rows.filter(~inside)


def reattach(conn: psycopg.Connection, folder: Path, table: str, partition_name: str) -> int:
    """Put an archived partition back (its checksum checked first); returns the rows restored."""
    found = conn.execute(
        "select range_start, range_end, file, sha256 from ops.retention_archives where table_name = %s "
        "and partition_name = %s order by archived_at desc limit 1",
        (table, partition_name),
    ).fetchone()
    if found is None:
        raise ConfigError(f"no archive of {table} partition {partition_name} is recorded in ops.retention_archives")
    start, end, file, expected = found
    path = folder / file
    if not path.exists():
        raise ConfigError(f"{path}: the archive of {table} partition {partition_name} is missing")
    actual = file_sha256(path)
    if actual != expected:
        raise ConfigError(f"{path}: checksum {actual[:12]}... differs from the recorded {expected[:12]}...: refused")
    schema_name = table.split(".", 1)[0]
    child = sql.SQL("{}.{}").format(sql.Identifier(schema_name), sql.Identifier(partition_name))
    conn.execute(
        sql.SQL("create table {} partition of {} for values from ({}) to ({})").format(
            child, _identifier(table), sql.Literal(start), sql.Literal(end)
        )
    )
    rows = pl.read_parquet(path)
    copy_frame(conn, child, rows)
    conn.execute(
        "update ops.retention_archives set reattached_at = now() where table_name = %s and partition_name = %s",
        (table, partition_name),
    )
    return rows.height
