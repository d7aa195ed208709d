"""Operations as assets: retention archives then drops partitions, never resurrects them, re-attaches on request,
and its checks fail on the states they exist for."""

import dataclasses
import json
import subprocess
import tarfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest

from trading_assets.compute import capacity
from trading_assets.config import ConfigError
from trading_assets.defs.ops import calendar, maintenance
from trading_assets.io import dumps, retention, trading_store
from trading_assets_tests.conftest import Platform

TODAY = datetime.now(UTC).date()
OLD = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 2, 1)]
RECENT = [TODAY - timedelta(days=3)]


def _vix_rows(days: list[date]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "trade_date": days,
            "exchange": "CFE",
            "source": "vx_futures",
            "vix_spot": [12.5 + i for i in range(len(days))],
            "curve": [[13.0, 14.0]] * len(days),
        }
    )


def _load(conn: psycopg.Connection, days: list[date]) -> None:
    with conn.transaction():
        trading_store.replace_window(conn, "vix_term_structure", _vix_rows(days), None, TODAY + timedelta(days=1))


def test_retention_archives_then_drops_only_expired_partitions_and_a_second_run_drops_nothing(
    platform: Platform, conn: psycopg.Connection
) -> None:
    _load(conn, OLD + RECENT)
    before = conn.execute("select * from trading.vix_term_structure order by trade_date").fetchall()
    result = platform.materialize(maintenance.RETENTION)
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        maintenance.RETENTION_RESPECTED: True,
        maintenance.ARCHIVES_VERIFIED: True,
        maintenance.PERMANENT_TABLES_INTACT: True,
    }
    observed = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert sorted(o.metadata["retention_archived"].value for o in observed) == [
        "[2024-01-01, 2024-02-01)",
        "[2024-02-01, 2024-03-01)",
    ]
    assert {o.asset_key.to_user_string() for o in observed} == {"trading/vix_term_structure"}
    left = conn.execute("select trade_date from trading.vix_term_structure order by 1").fetchall()
    assert [d for (d,) in left] == RECENT
    archives = conn.execute(
        "select partition_name, rows, file, sha256 from ops.retention_archives order by partition_name"
    ).fetchall()
    assert [(a[0], a[1]) for a in archives] == [("vix_term_structure_p202401", 2), ("vix_term_structure_p202402", 1)]
    folder = platform.settings.archive_dir
    manifest = {e["partition"]: e for e in json.loads((folder / "manifest.json").read_text())}
    for name, rows, file, sha in archives:
        assert manifest[name]["sha256"] == sha == retention.file_sha256(folder / file)
        assert manifest[name]["rows"] == rows
    # The archive holds exactly the rows that were dropped, readable with polars.
    archived = pl.concat([pl.read_parquet(folder / a[2]) for a in archives]).sort("trade_date")
    assert archived["trade_date"].to_list() == OLD
    assert archived["vix_spot"].to_list() == [r[3] for r in before[:3]]
    logged = conn.execute("select count(*) from ops.maintenance_log where task = 'retention'").fetchone()[0]
    assert logged == 2
    report = platform.materialize(maintenance.COMPRESSION_REPORT).get_asset_materialization_events()[0]
    assert "trading.vix_term_structure" in report.materialization.metadata["report"].value
    (before_bytes, after_bytes) = conn.execute(
        "select sum(db_bytes), sum(file_bytes) from ops.retention_archives"
    ).fetchone()
    assert before_bytes > after_bytes > 0  # two tiny partitions: 8 kB pages and indexes against a few kB of parquet
    platform.materialize(maintenance.RETENTION)
    assert conn.execute("select count(*) from ops.retention_archives").fetchone()[0] == 2
    assert [d for (d,) in conn.execute("select trade_date from trading.vix_term_structure order by 1")] == RECENT


def test_a_rerun_never_resurrects_dropped_rows_until_the_archive_is_reattached(
    platform: Platform, conn: psycopg.Connection
) -> None:
    _load(conn, OLD + RECENT)
    original = conn.execute(
        "select * from trading.vix_term_structure where trade_date < '2024-02-01' order by 1"
    ).fetchall()
    platform.materialize(maintenance.RETENTION)
    _load(conn, OLD + RECENT)  # a backfill over the old months
    assert conn.execute("select count(*) from trading.vix_term_structure").fetchone()[0] == 1
    with conn.transaction():
        restored = retention.reattach(
            conn, platform.settings.archive_dir, "trading.vix_term_structure", "vix_term_structure_p202401"
        )
    assert restored == 2
    back = conn.execute(
        "select * from trading.vix_term_structure where trade_date < '2024-02-01' order by 1"
    ).fetchall()
    assert back == original
    # Re-attached on purpose: retention keeps it, and a rerun of its month writes there again.
    platform.materialize(maintenance.RETENTION)
    assert (
        conn.execute("select count(*) from trading.vix_term_structure where trade_date < '2024-02-01'").fetchone()[0]
        == 2
    )


def test_a_tampered_archive_is_refused_on_reattach(platform: Platform, conn: psycopg.Connection) -> None:
    _load(conn, OLD)
    platform.materialize(maintenance.RETENTION)
    file = conn.execute("select file from ops.retention_archives where partition_name like '%202401'").fetchone()[0]
    path = platform.settings.archive_dir / file
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ConfigError, match="differs from the recorded"), conn.transaction():
        retention.reattach(
            conn, platform.settings.archive_dir, "trading.vix_term_structure", "vix_term_structure_p202401"
        )
    assert not conn.execute("select count(*) from trading.vix_term_structure").fetchone()[0]


def test_retention_checks_fail_on_overdue_unverified_and_shrunk(platform: Platform, conn: psycopg.Connection) -> None:
    _load(conn, OLD)
    policies = retention.read_policies(platform.settings.retention_config)
    archive_dir: Path = platform.settings.archive_dir
    now = datetime.now(UTC)
    with conn.transaction():
        first = {r.check_name: r for r in maintenance.retention_checks(conn, policies, archive_dir, now)}
    assert not first[maintenance.RETENTION_RESPECTED].passed  # not applied yet: January and February are overdue
    platform.materialize(maintenance.RETENTION)
    (archive_dir / conn.execute("select file from ops.retention_archives limit 1").fetchone()[0]).unlink()
    conn.execute(
        "insert into trading.trade_history (order_id, symbol, side, qty, price, strategy, submitted_at, filled_at, "
        "trade_date, source_file, source_line) values ('X1', 'SPY', 'buy', 1, 1, 's', now(), now(), current_date, "
        "'f', 2)"
    )
    with conn.transaction():
        maintenance.retention_checks(conn, policies, archive_dir, now)  # records the permanent table's rows
    conn.execute("alter table trading.trade_history disable trigger trade_history_no_delete")
    conn.execute("delete from trading.trade_history")
    with conn.transaction():
        results = {r.check_name: r for r in maintenance.retention_checks(conn, policies, archive_dir, now)}
    assert results[maintenance.RETENTION_RESPECTED].passed
    assert not results[maintenance.ARCHIVES_VERIFIED].passed
    assert "missing" in str(results[maintenance.ARCHIVES_VERIFIED].metadata["unverified"].value)
    assert not results[maintenance.PERMANENT_TABLES_INTACT].passed


def test_retention_config_is_checked(tmp_path: Path, conn: psycopg.Connection) -> None:
    bad = tmp_path / "retention.toml"
    bad.write_text('[tables]\n"trading.ml_features" = -3\n')
    with pytest.raises(ConfigError, match="positive number of days"):
        retention.read_policies(bad)
    with pytest.raises(ConfigError, match="not range-partitioned"):
        retention.partitions_of(conn, "trading.trade_history")


def test_table_sizes_recorded_with_a_plot_and_the_threshold_check(platform: Platform, conn: psycopg.Connection) -> None:
    _load(conn, OLD + RECENT)
    result = platform.materialize(maintenance.TABLE_SIZES)
    assert result.success
    rows = dict(
        conn.execute(
            "select table_name, total_bytes from ops.table_size_history where database_name = current_database()"
        ).fetchall()
    )
    # Partitions are summed into their table; the database itself is a row too.
    assert rows["trading.vix_term_structure"] > 0 and "trading.vix_term_structure_p202401" not in rows
    assert rows["(database)"] > rows["trading.vix_term_structure"]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["plot"].value.startswith("![largest tables](data:image/png;base64,iVBOR")
    assert Path(metadata["plot_file"].value).read_bytes()[:4] == b"\x89PNG"
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["next_threshold_gb"].value == 3


def test_size_thresholds_warn_then_fail_with_the_projected_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    history = pl.DataFrame(
        {"measured_at": [now - timedelta(days=10), now], "bytes": [int(7.0 * capacity.GIB), int(9.0 * capacity.GIB)]}
    )
    growth = capacity.growth_per_day(history)
    assert growth == pytest.approx(0.2 * capacity.GIB)
    warned = maintenance.size_check(int(9.0 * capacity.GIB), growth, now)
    assert not warned.passed and warned.severity.value == "WARN"
    assert warned.metadata["next_threshold_gb"].value == 15
    assert warned.metadata["next_threshold_reached"].value == "2026-01-31"  # 6 GB at 0.2 GB a day
    failed = maintenance.size_check(int(16 * capacity.GIB), growth, now)
    assert not failed.passed and failed.severity.value == "ERROR"


def test_backup_dumps_with_checksum_and_counts_then_the_restore_test_compares(
    platform: Platform, conn: psycopg.Connection
) -> None:
    _load(conn, OLD + RECENT)
    result = platform.materialize(maintenance.BACKUP)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    path, rotation, sha, counts = conn.execute(
        "select path, rotation, sha256, table_rows from ops.backup_log where kind = 'platform'"
    ).fetchone()
    folder = Path(path)
    assert folder.name.endswith("_monthly.dump") and rotation == "monthly"  # the first of its month
    assert dumps.tree_sha256(folder) == sha
    assert counts["trading.vix_term_structure"] == 4
    assert {oct(p.stat().st_mode & 0o777) for p in folder.rglob("*") if p.is_file()} == {"0o600"}
    assert not list(folder.parent.glob("*.partial"))
    restored = platform.materialize(maintenance.RESTORE_TEST)
    assert [e.passed for e in restored.get_asset_check_evaluations()] == [True]
    assert conn.execute("select restore_passed from ops.backup_log").fetchone()[0] is True
    assert not conn.execute("select datname from pg_database where datname like 'restore_test_%'").fetchall()
    # A dump whose tables do not come back as they were fails the restore test.
    counts_file = folder / "row_counts.json"
    counts_file.write_text(json.dumps({**counts, "trading.vix_term_structure": 5}))
    failed = platform.materialize(maintenance.RESTORE_TEST)
    assert [e.passed for e in failed.get_asset_check_evaluations()] == [False]


def test_a_killed_backup_leaves_no_partial_and_the_rotation_intact(
    platform: Platform, conn: psycopg.Connection, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "dumps"
    first = dumps.dump(database_url, folder, [])
    killer = tmp_path / "pg_dump"
    killer.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in --file=*) mkdir -p "${a#--file=}"; '
                      'echo half > "${a#--file=}/toc.dat";; esac; done\nkill -9 $$\n')  # fmt: skip
    killer.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"pg_dump of \S+ failed"):
        dumps.dump(database_url, folder, [first.started_at], pg_dump=str(killer))
    kept = sorted(p.name for p in first.path.parent.iterdir())
    assert kept == [first.path.name] and dumps.tree_sha256(first.path) == first.sha256


def test_rotation_keeps_seven_daily_four_weekly_and_every_monthly() -> None:
    start = datetime(2026, 1, 1, 4, tzinfo=UTC)
    made: list[datetime] = []
    backups = []
    for day in range(70):
        moment = start + timedelta(days=day)
        backups.append((Path(f"/b/{day}"), dumps.rotation_of(moment, made), moment))
        made.append(moment)
    removed = set(dumps.expired_dumps(backups))
    kept = [(r, t.date().isoformat()) for p, r, t in backups if p not in removed]
    assert [t for r, t in kept if r == "monthly"] == ["2026-01-01", "2026-02-01", "2026-03-01"]
    assert len([1 for r, _ in kept if r == "weekly"]) == 4
    assert [t for r, t in kept if r == "daily"][-1] == "2026-03-11" and len([1 for r, _ in kept if r == "daily"]) == 7


def test_backup_recent_fails_when_the_last_backup_is_old(conn: psycopg.Connection) -> None:
    conn.execute(
        "insert into ops.backup_log (kind, database_name, path, started_at, finished_at, bytes, sha256, table_rows, "
        "rotation) values ('platform', 'x', '/nowhere', now() - interval '30 hours', now() - interval '30 hours', 1, "
        "'s', '{}', 'daily')"
    )
    with conn.transaction():
        (check,) = maintenance.backup_checks(conn, datetime.now(UTC))
    assert not check.passed


def test_vacuum_and_reindex_record_their_work_and_rebuild_only_bloated_indexes(
    platform: Platform, conn: psycopg.Connection
) -> None:
    conn.execute("create table ops.scratch_bloat (id integer primary key, pad text)")
    conn.execute("insert into ops.scratch_bloat select g, repeat('x', 50) from generate_series(1, 60000) g")
    conn.execute("delete from ops.scratch_bloat where id % 10 <> 0")
    # The server publishes a session's table statistics within a second; this test cannot wait that long.
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select 1")
    vacuumed = platform.materialize(maintenance.VACUUM)
    assert vacuumed.success
    logged = conn.execute(
        "select bytes_before, bytes_after from ops.maintenance_log where task = 'vacuum_analyze' "
        "and target = 'ops.scratch_bloat'"
    ).fetchone()
    # VACUUM makes dead rows' space reusable; the file keeps its size (plus its free-space and visibility maps).
    assert logged is not None and logged[0] > 0 and logged[1] > 0
    with conn.transaction():
        bloat = {index: share for index, share, _ in maintenance.index_bloat(conn)}
    assert bloat["ops.scratch_bloat_pkey"] > maintenance.BLOAT_THRESHOLD
    rebuilt = platform.materialize(maintenance.REINDEX)
    work = rebuilt.get_asset_materialization_events()[0].materialization.metadata["work"].value
    mine = [w for w in work if w["index"] == "ops.scratch_bloat_pkey"]
    assert mine and mine[0]["bytes_after"] < mine[0]["bytes_before"] / 3
    # Rebuilt, it is no longer bloated: the next month leaves it alone.
    again = platform.materialize(maintenance.REINDEX)
    later = again.get_asset_materialization_events()[0].materialization.metadata["work"].value
    assert not [w for w in later if w["index"] == "ops.scratch_bloat_pkey"]


def test_old_runs_are_purged_with_their_events(platform: Platform) -> None:
    platform.materialize(maintenance.TABLE_SIZES)
    platform.materialize(maintenance.TABLE_SIZES)
    assert platform.instance.get_runs_count() == 2
    assert calendar.purge_runs(platform.instance, datetime.now(UTC) - timedelta(days=1)) == 0
    assert calendar.purge_runs(platform.instance, datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert platform.instance.get_runs_count() == 0


def test_weekly_digest_lists_failed_runs_alerts_and_the_last_backup(
    platform: Platform, conn: psycopg.Connection
) -> None:
    platform.materialize(maintenance.RESTORE_TEST, raise_on_error=False)  # no backup yet: the run fails
    conn.execute(
        "insert into ops.alerts (severity, title, source, channel, status) values "
        "('ERROR', 'check trading/vix_term_structure:vix_front_not_expired failed', 'check sensor', 'log', 'logged')"
    )
    with conn.transaction():
        digest = calendar.week_digest(platform.instance, conn, datetime.now(UTC) - timedelta(days=7))
    assert digest.severity == "WARNING"
    assert "Failed runs: 1" in digest.body and "vix_front_not_expired failed x1" in digest.body
    assert "Last backup: never" in digest.body


def test_capacity_report_projects_each_table() -> None:
    now = datetime(2026, 4, 1, tzinfo=UTC)
    history = pl.DataFrame(
        {
            "measured_at": [now - timedelta(days=30), now] * 2,
            "table_name": ["a", "a", "b", "b"],
            "total_bytes": [100, 130, 50, 50],
        }
    )
    report = {r["table_name"]: r for r in calendar.growth_report(history, now).iter_rows(named=True)}
    assert report["a"]["growth_per_month"] == 30  # 30 bytes in 30 days, 30.44 days a month, rounded down
    assert report["a"]["in_12_months"] == 130 + int(1 * 30.44 * 12)
    assert report["b"]["in_3_months"] == 50


def test_toast_compression_is_lz4_where_the_server_has_it(conn: psycopg.Connection) -> None:
    (detail,) = conn.execute("select detail from ops.maintenance_log where task = 'compression'").fetchone()
    try:
        conn.execute("set default_toast_compression = lz4")
        supported = True
    except psycopg.errors.InvalidParameterValue:
        supported = False
    assert detail["lz4"] is supported
    (method,) = conn.execute(
        "select attcompression from pg_attribute where attrelid = 'trading.ml_features'::regclass "
        "and attname = 'features'"
    ).fetchone()
    assert method == ("l" if supported else "")


def test_configured_folders_are_archived_beside_the_databases(platform: Platform, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "weights.bin").write_bytes(b"\x00" * 1000)
    (models / "notes.txt").write_text("trained on 2024-01\n")
    configured = Platform(
        dataclasses.replace(platform.settings, backup_folders=(("models", models),)), platform.instance
    )
    assert configured.materialize(maintenance.BACKUP).success
    with psycopg.connect(configured.settings.database_url) as conn:
        path, counts = conn.execute(
            "select path, table_rows from ops.backup_log where kind = 'folder:models'"
        ).fetchone()
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["notes.txt", "v1", "v1/weights.bin"]
    assert counts == {"files": 2} and oct(Path(path).stat().st_mode & 0o777) == "0o600"


def test_backup_folders_config_is_checked(tmp_path: Path) -> None:
    from trading_assets.config import Settings

    with pytest.raises(ConfigError, match="must be name=path"):
        Settings.from_env({"TRADING_ASSETS_HOME": str(tmp_path), "TRADING_ASSETS_BACKUP_FOLDERS": "Models"})
    with pytest.raises(ConfigError, match="is not a folder"):
        Settings.from_env({"TRADING_ASSETS_HOME": str(tmp_path), "TRADING_ASSETS_BACKUP_FOLDERS": f"m={tmp_path}/no"})


def test_a_connection_lost_mid_retention_fails_the_run_cleanly_and_the_next_run_succeeds(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a server restart does to a run: its session ends mid-transaction. Nothing is dropped, the next run
    archives and drops as if the first had not happened."""
    _load(conn, OLD)
    original = retention.archive_partition

    def archive_then_lose_the_session(run_conn: psycopg.Connection, *args: object) -> dict:
        entry = original(run_conn, *args)
        conn.execute("select pg_terminate_backend(%s)", (run_conn.info.backend_pid,))
        return entry

    monkeypatch.setattr(retention, "archive_partition", archive_then_lose_the_session)
    failed = platform.materialize(maintenance.RETENTION, raise_on_error=False)
    assert not failed.success and not failed.get_asset_materialization_events()
    assert conn.execute("select count(*) from trading.vix_term_structure").fetchone()[0] == 3
    assert conn.execute("select count(*) from ops.retention_archives").fetchone()[0] == 0
    monkeypatch.setattr(retention, "archive_partition", original)
    assert platform.materialize(maintenance.RETENTION).success
    assert conn.execute("select count(*) from trading.vix_term_structure").fetchone()[0] == 0
    assert conn.execute("select count(*) from ops.retention_archives").fetchone()[0] == 2


def test_a_backup_folder_without_space_fails_clearly_and_keeps_the_old_backups(
    database_url: str, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=False).returncode:
        pytest.skip("mounting a small tmpfs needs privileges this machine does not give")
    try:
        folder = small / "dumps"
        (folder / "keep").mkdir(parents=True)
        (folder / "keep" / "old.dump").write_bytes(b"x" * 1000)
        with pytest.raises(RuntimeError, match="No space left on device"):
            dumps.dump(database_url, folder, [])
        assert (folder / "keep" / "old.dump").read_bytes() == b"x" * 1000
        assert not list(folder.rglob("*.partial"))
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_the_maintenance_calendar_is_scheduled_with_its_checklists(platform: Platform) -> None:
    schedules = {s.name: s for s in platform.defs.schedules}
    expected = {
        "retention_daily": "30 1 * * *",
        "table_sizes_daily": "45 5 * * *",
        "backup_daily": "0 4 * * *",
        "vacuum_weekly": "0 3 * * 0",
        "weekly_digest_sunday": "0 8 * * 0",
        "monthly_checklist": "0 2 1 * *",
        "capacity_quarterly": "0 7 1 1,4,7,10 *",
        "purge_run_history_daily": "30 0 * * *",
        "trading_partitions_daily": "5 0 * * *",
    }
    assert {name: schedules[name].cron_schedule for name in expected} == expected
    assert schedules["weekly_digest_sunday"].description == calendar.WEEKLY_CHECKLIST
    assert schedules["monthly_checklist"].description == calendar.MONTHLY_CHECKLIST
    assert schedules["capacity_quarterly"].description == calendar.QUARTERLY_CHECKLIST
