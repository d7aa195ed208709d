"""Numbered SQL migrations (`sql/NNN_name.sql`), applied in order and recorded with a checksum."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from trading_assets.config import SQL_DIR
from trading_assets.io.backup import backup_tables, existing_tables
from trading_assets.io.postgres import connect

_FILE_PATTERN = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# A migration that changes tables users write declares them on a line `-- backup before: t1 t2 ...`: when one of
# them exists with rows (in public or stage1), they are backed up before the migration runs.
_BACKUP_DIRECTIVE = "-- backup before:"
_BACKUP_SCHEMAS = ("public", "stage1")
# Any constant works; it only has to be the same for every process migrating this database.
_MIGRATION_LOCK = 7_302_551_001

_BOOTSTRAP = """
create schema if not exists ops;
create table if not exists ops.schema_migrations (
    version integer primary key check (version >= 1),
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now()
);
"""


class MigrationError(RuntimeError):
    """The migration files and the database disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def backed_up_tables(self) -> list[str]:
        for line in self.text.splitlines():
            if line.startswith(_BACKUP_DIRECTIVE):
                return line.removeprefix(_BACKUP_DIRECTIVE).split()
        return []

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNN_lowercase_name.sql")
        migrations.append(Migration(int(match.group(1)), path.stem, path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migration files share a version number")
    return migrations


def migrate(url: str, directory: Path = SQL_DIR, backup_dir: Path | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns the names applied. Tables a migration
    declares (`-- backup before:`) are backed up into `backup_dir` first when they hold rows.

    Refuses to run when an applied file was edited since (its checksum changed): the fix is a new file.
    """
    migrations = discover(directory)
    applied_names = []
    with connect(url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(_BOOTSTRAP)
            recorded = dict(conn.execute("select version, checksum from ops.schema_migrations").fetchall())
            for migration in migrations:
                if migration.version in recorded:
                    if recorded[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} was edited after it was applied (checksum differs); "
                            "add a new migration file instead of changing an applied one"
                        )
                    continue
                if backup_dir is not None and migration.backed_up_tables:
                    _backup_before(conn, migration, backup_dir)
                with conn.transaction():
                    conn.execute(migration.text)
                    conn.execute(
                        "insert into ops.schema_migrations (version, name, checksum) values (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_names.append(migration.name)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_names


def _backup_before(conn: psycopg.Connection, migration: Migration, backup_dir: Path) -> None:
    tables = existing_tables(conn, migration.backed_up_tables, _BACKUP_SCHEMAS)
    holding = [
        (schema, table)
        for schema, table in tables
        if conn.execute(sql.SQL("select exists (select from {})").format(sql.Identifier(schema, table))).fetchone()[0]
    ]
    if holding:
        backup_tables(conn, tables, backup_dir / "pre-migration", migration.name)
