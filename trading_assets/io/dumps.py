"""Whole-database backups with the pg_dump that matches the server: directory format, parallel jobs, fast
compression, files 0600, a checksum, written under a temporary name and renamed, so a killed backup never enters
the rotation; restores into a scratch database compared table by table with the row counts taken at dump time."""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from trading_assets.config import ConfigError
from trading_assets.io.database import embedded_bin_dir
from trading_assets.io.postgres import connect

DAILY, WEEKLY, MONTHLY = "daily", "weekly", "monthly"
KEEP = {DAILY: 7, WEEKLY: 4, MONTHLY: None}  # None: every monthly backup is kept
PARALLEL_JOBS = 2
COMPRESSION = "1"  # measured here: default gzip 12.5 MB/s, -Fd -j2 -Z1 82 MB/s


@dataclass(frozen=True)
class Dump:
    path: Path
    database: str
    rotation: str
    started_at: datetime
    finished_at: datetime
    bytes: int
    sha256: str
    table_rows: dict[str, int]


def _major(version_text: str) -> int | None:
    """12 of 'pg_dump (PostgreSQL) 12.3' or 'pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)'."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text)
    return int(match.group(1)) if match else None


def client_tool(url: str, name: str) -> str:
    """The path of `name` (pg_dump, pg_restore) of the server's major version: the embedded server's own, the
    Debian ones, or the PATH's; refused when none matches (an older client cannot dump a newer server, a newer
    one writes archives an older server's tools cannot read)."""
    with connect(url, autocommit=True) as conn:
        server = int(conn.execute("show server_version_num").fetchone()[0]) // 10_000
    candidates = [
        str(embedded_bin_dir() / name),
        *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")),
        shutil.which(name) or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False).stdout
            if _major(version) == server:
                return candidate
    raise ConfigError(f"no {name} of PostgreSQL {server} found (looked at {', '.join(c for c in candidates if c)})")


def _client_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment carrying it (never on a command line, never logged)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**params), env


def rotation_of(moment: datetime, previous: list[datetime]) -> str:
    """Monthly: the first backup of its month; weekly: the first of its ISO week (else daily)."""
    if not any((p.year, p.month) == (moment.year, moment.month) for p in previous):
        return MONTHLY
    if not any(p.isocalendar()[:2] == moment.isocalendar()[:2] for p in previous):
        return WEEKLY
    return DAILY


def tree_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def table_rows(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row counts of every table (partitioned tables counted once, through their parent)."""
    tables = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind in ('r', 'p') and not c.relispartition "
        "and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_%' order by 1, 2"
    ).fetchall()
    return {
        f"{schema}.{name}": conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(schema, name))
        ).fetchone()[0]
        for schema, name in tables
    }


def dump(url: str, folder: Path, previous: list[datetime], pg_dump: str | None = None) -> Dump:
    """Dump the database of `url` into `folder`/<database>/<time>_<rotation>.dump (directory format); the row
    counts are taken in the snapshot pg_dump reads, so they describe exactly what the dump holds."""
    tool = pg_dump or client_tool(url, "pg_dump")
    started = datetime.now(UTC)
    rotation = rotation_of(started, previous)
    database = conninfo_to_dict(url)["dbname"]
    target = folder / database / f"{started:%Y%m%dT%H%M%SZ}_{rotation}.dump"
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o700)
    conninfo, env = _client_env(url)
    with psycopg.connect(url) as conn:
        conn.execute("set transaction isolation level repeatable read, read only")
        snapshot = conn.execute("select pg_export_snapshot()").fetchone()[0]
        counts = table_rows(conn)
        try:
            subprocess.run(
                [tool, "--format=directory", f"--jobs={PARALLEL_JOBS}", f"--compress={COMPRESSION}",
                 f"--snapshot={snapshot}", f"--file={partial}", f"--dbname={conninfo}"],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"pg_dump of {database} failed ({exc.returncode}): {exc.stderr.strip()[-500:]}") from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        conn.rollback()
    for path in partial.rglob("*"):
        os.chmod(path, 0o600 if path.is_file() else 0o700)
    os.chmod(partial, 0o700)
    (partial / "row_counts.json").write_text(json.dumps(counts, indent=1))
    os.chmod(partial / "row_counts.json", 0o600)
    checksum = tree_sha256(partial)
    partial.rename(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return Dump(target, database, rotation, started, datetime.now(UTC), size, checksum, counts)


def archive_folder(source: Path, folder: Path, name: str, previous: list[datetime]) -> Dump:
    """A gzip (level 1) tar of `source` as `folder`/<name>/<time>_<rotation>.tar.gz, written under a temporary
    name and renamed, 0600, with its checksum and its file count."""
    import tarfile

    started = datetime.now(UTC)
    rotation = rotation_of(started, previous)
    target = folder / name / f"{started:%Y%m%dT%H%M%SZ}_{rotation}.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o700)
    partial = target.with_name(target.name + ".partial")
    files = 0
    try:
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for path in sorted(source.rglob("*")):
                tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
                files += path.is_file()
        os.chmod(partial, 0o600)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return Dump(target, name, rotation, started, datetime.now(UTC), target.stat().st_size, digest, {"files": files})


def expired_dumps(dumps: list[tuple[Path, str, datetime]]) -> list[Path]:
    """The dumps (path, rotation, time) past the rotation: 7 daily, 4 weekly, every monthly."""
    removed = []
    for rotation, keep in KEEP.items():
        if keep is None:
            continue
        mine = sorted((d for d in dumps if d[1] == rotation), key=lambda d: d[2], reverse=True)
        removed += [path for path, _, _ in mine[keep:]]
    return removed


def restore(url: str, path: Path, into: str, pg_restore: str | None = None) -> dict[str, tuple[int, int]]:
    """Restore the dump at `path` into a new database `into` on the server of `url`; returns the tables whose
    row count differs from the one taken at dump time ({table: (at dump, restored)}; empty: identical)."""
    tool = pg_restore or client_tool(url, "pg_restore")
    expected = json.loads((path / "row_counts.json").read_text())
    with connect(url, autocommit=True) as admin:
        if admin.execute("select 1 from pg_database where datname = %s", (into,)).fetchone():
            raise ConfigError(f"database {into} exists: restore only into a new database")
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(into)))
    target = make_conninfo(url, dbname=into)
    conninfo, env = _client_env(target)
    result = subprocess.run(
        [tool, f"--jobs={PARALLEL_JOBS}", "--no-owner", f"--dbname={conninfo}", str(path)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"pg_restore of {path} into {into} failed: {result.stderr.strip()[-500:]}")
    with connect(target) as conn:
        restored = table_rows(conn)
    return {
        table: (expected.get(table, -1), restored.get(table, -1))
        for table in sorted(set(expected) | set(restored))
        if expected.get(table, -1) != restored.get(table, -1)
    }
