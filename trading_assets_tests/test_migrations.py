"""Migrations apply in order, are recorded with checksums, apply twice as a no-op and refuse edited files."""

import shutil
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from trading_assets.config import SQL_DIR
from trading_assets.io import market_store
from trading_assets.io.ema_store import EMA_FAMILIES
from trading_assets.io.market_store import BAR_TABLES
from trading_assets.io.migrations import MigrationError, discover, migrate


def _recorded(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("select version, checksum from ops.schema_migrations order by version").fetchall()


def test_every_migration_is_recorded_and_a_second_run_changes_nothing(database_url: str) -> None:
    files = discover()
    assert [m.version for m in files] == sorted(m.version for m in files)
    assert _recorded(database_url) == [(m.version, m.checksum) for m in files]
    before = _recorded(database_url)
    assert migrate(database_url) == []
    assert _recorded(database_url) == before


def test_fresh_database_applies_all_files_then_nothing(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("drop schema core_energy, market, catalog, ops cascade")
    applied = migrate(database_url)
    assert applied == [m.name for m in discover()]
    assert migrate(database_url) == []


def test_edited_applied_file_is_refused_and_nothing_runs(database_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(SQL_DIR, directory)
    edited = sorted(directory.glob("*.sql"))[0]
    edited.write_text(edited.read_text() + "\ncreate table ops.should_not_exist (x int);\n")
    (directory / "999_late_addition.sql").write_text("create table ops.late_addition (x int);\n")
    with pytest.raises(MigrationError, match=f"{edited.name} was edited after it was applied"):
        migrate(database_url, directory)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select to_regclass('ops.late_addition')").fetchone()[0] is None
        assert conn.execute("select to_regclass('ops.should_not_exist')").fetchone()[0] is None


def test_new_file_is_applied_once(database_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(SQL_DIR, directory)
    (directory / "999_late_addition.sql").write_text("create table ops.late_addition (x int);\n")
    assert migrate(database_url, directory) == ["999_late_addition"]
    assert migrate(database_url, directory) == []


def test_failing_migration_leaves_no_trace(database_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(SQL_DIR, directory)
    (directory / "999_broken.sql").write_text("create table ops.half_done (x int);\nselect no_such_function();\n")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(database_url, directory)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select to_regclass('ops.half_done')").fetchone()[0] is None
        assert conn.execute("select count(*) from ops.schema_migrations where version = 999").fetchone()[0] == 0


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_Create.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match=r"NNN_lowercase_name\.sql"):
        discover(tmp_path)


def test_no_table_has_the_same_index_twice(database_url: str) -> None:
    # A table made `like another including all` copies its indexes: creating one of them again by name would
    # make every write maintain it twice.
    with psycopg.connect(database_url) as conn:
        repeated = conn.execute(
            "select indrelid::regclass::text, array_agg(indexrelid::regclass::text order by indexrelid) from pg_index "
            "group by indrelid, indkey::text, indclass::text, coalesce(pg_get_expr(indpred, indrelid), ''), "
            "coalesce(pg_get_expr(indexprs, indrelid), '') having count(*) > 1"
        ).fetchall()
    assert repeated == []


def test_the_market_tables_keep_an_assets_rows_of_a_day_together(database_url: str) -> None:
    # Keyed by date before timeframe, a one-day refresh changes one index leaf per asset and table instead of one
    # per asset and timeframe (each written whole to the WAL after a checkpoint).
    tables = [f"market.{t}" for t in BAR_TABLES.values()] + [f"market.{f}_packed" for f in EMA_FAMILIES]
    with psycopg.connect(database_url) as conn:
        keys = {t: market_store._primary_key(conn, sql.Identifier(*t.split("."))) for t in tables}
    daily = "market.price_bars_1d"
    assert keys == {t: ["asset_id", "trade_date"] if t == daily else ["asset_id", "trade_date", "tf"] for t in tables}
