"""core_energy.dim_series is the golden table: a SQL edit is seen by the graph and everything derived from it
follows by itself; a CSV comes in only through an explicit import that shows its plan; the derived map
refuses other writers; the dated backups keep a bounded history."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.compute.series import (
    backup_name,
    expired_backups,
    import_plan_problems,
    plan_series_import,
)
from trading_assets.config import Settings
from trading_assets.defs.jobs import OBSERVE_SERIES_JOB, SERIES_IMPORT_JOB
from trading_assets.defs.metadata.assets import DIM_SERIES, DIM_SERIES_BACKUP, MAP_MODEL_SERIES, V_SERIES_WIDE
from trading_assets.io.series_store import read_dim_series
from trading_assets.orchestration import dagster_instance
from trading_assets.sources.series_files import read_series_config
from trading_assets_tests.conftest import Platform

HEADER = "model_col,series_code,unit,freq,description,tags\n"
MAP_REFUSED = (
    "core_energy.map_model_series is derived from core_energy.dim_series and written only by its refresh; "
    "edit core_energy.dim_series instead"
)


def _dim(conn: psycopg.Connection) -> dict[str, tuple]:
    rows = conn.execute("select model_col, series_code, unit, freq, description, tags from core_energy.dim_series")
    return {row[0]: row[1:] for row in rows}


def _version(conn: psycopg.Connection) -> int:
    return conn.execute("select version from core_energy.dim_series_state").fetchone()[0]


def _view_columns(conn: psycopg.Connection) -> list[str]:
    return [d.name for d in conn.execute("select * from core_energy.v_series_wide limit 0").description]


class Daemon:
    """What the daemon does for the series slice, one tick at a time: the edit sensor launches the observation
    it requests, then the automation sensor's conditions are evaluated and what they request is run."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.sensor = platform.defs.resolve_sensor_def("core_energy_tables_edited")
        self.sensor_cursor: str | None = None
        self.now = datetime.now(UTC)
        self.automation = dg.evaluate_automation_conditions(
            defs=platform.defs, instance=platform.instance, evaluation_time=self.now
        )
        self.ran: list[set[dg.AssetKey]] = []

    def tick(self) -> None:
        data = self.sensor.evaluate_tick(
            dg.build_sensor_context(instance=self.platform.instance, cursor=self.sensor_cursor)
        )
        self.sensor_cursor = data.cursor
        for request in data.run_requests:
            self.platform.defs.resolve_job_def(OBSERVE_SERIES_JOB).execute_in_process(
                instance=self.platform.instance, asset_selection=request.asset_selection
            )
        for _ in range(5):
            self.now += timedelta(minutes=1)
            self.automation = dg.evaluate_automation_conditions(
                defs=self.platform.defs,
                instance=self.platform.instance,
                evaluation_time=self.now,
                cursor=self.automation.cursor,
            )
            requested = {
                r.key for r in self.automation.results if isinstance(r.key, dg.AssetKey) and r.true_subset.size
            }
            if not requested:
                return
            self.ran.append(requested)
            self.platform.materialize(*requested)
        raise AssertionError(f"automation did not settle: {self.ran}")


def test_a_sql_insert_reaches_the_wide_view_with_no_manual_step(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    daemon = Daemon(platform)
    daemon.tick()  # a new platform: dim_series seeded from the file and everything derived from it built
    assert _version(conn) == 1
    assert "ust_1y" not in _view_columns(conn)
    platform.materialize(
        dg.AssetKey(["core_energy", "fact_series_value"]),
        partition_range=("2020-03-01", "2020-03-01"),
        files=[],
    )

    conn.execute(
        "insert into core_energy.dim_series (model_col, series_code, unit, freq, description, tags) "
        "values ('ust_1y', 'DGS1', 'percent', 'D', '1-year Treasury yield', '{rates,treasury}')"
    )
    conn.execute(
        "insert into core_energy.fact_series_value (series_code, obs_date, value) "
        "values ('DGS1', '2020-03-09', 0.43), ('DGS1', '2020-03-10', 0.52)"
    )
    daemon.ran.clear()
    daemon.tick()

    # One run: the map, its blocking check, then the view on it; the backup beside them.
    assert daemon.ran == [{MAP_MODEL_SERIES, DIM_SERIES_BACKUP, V_SERIES_WIDE}]
    assert conn.execute(
        "select series_code from core_energy.map_model_series where model_col = 'ust_1y'"
    ).fetchone() == ("DGS1",)
    assert _view_columns(conn) == [
        "date", "cpi_all_items", "nonfarm_payrolls", "unemployment_rate", "ust_10y", "ust_1y", "ust_2y", "ust_30y",
        "ust_3m", "ust_5y",
    ]  # fmt: skip
    assert conn.execute(
        "select date::text, ust_1y from core_energy.v_series_wide where ust_1y is not null order by 1"
    ).fetchall() == [("2020-03-09", 0.43), ("2020-03-10", 0.52)]
    assert conn.execute("select ust_1y from core_energy.v_model_wide where date = '2020-03-10'").fetchone() == (0.52,)
    backup = platform.settings.backup_dir / "dim_series" / backup_name(datetime.now(UTC).date(), 2)
    exported = pl.read_csv(backup).filter(pl.col("model_col") == "ust_1y").to_dicts()
    assert exported == [
        {
            "model_col": "ust_1y",
            "series_code": "DGS1",
            "unit": "percent",
            "freq": "D",
            "description": "1-year Treasury yield",
            "tags": "rates;treasury",
        }
    ]

    # The graph shows the edit: dim_series observed at the table's new content version.
    [record] = platform.instance.fetch_observations(dg.AssetRecordsFilter(asset_key=DIM_SERIES), limit=1).records
    assert record.asset_observation.data_version == "2"
    assert record.asset_observation.metadata["dagster/row_count"].value == 9

    # Settled: another tick changes nothing and runs nothing.
    daemon.ran.clear()
    daemon.tick()
    assert daemon.ran == []


def test_sql_edits_bump_the_content_version_once_per_transaction_and_never_on_rollback(
    conn: psycopg.Connection,
) -> None:
    assert _version(conn) == 0
    with conn.transaction():
        conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('a_col', 'A', 'D')")
        conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('b_col', 'B', 'D')")
        conn.execute("update core_energy.dim_series set unit = 'x' where model_col = 'a_col'")
    assert _version(conn) == 1
    conn.execute("update core_energy.dim_series set unit = unit")  # no content changed
    conn.execute("delete from core_energy.dim_series where model_col = 'nothing'")
    assert _version(conn) == 1
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute("update core_energy.dim_series set description = 'changed' where model_col = 'a_col'")
        conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('Bad', 'C', 'D')")
    assert _version(conn) == 1
    assert _dim(conn)["a_col"][3] == ""
    conn.execute("truncate core_energy.dim_series")
    assert _version(conn) == 2
    changed_by = conn.execute("select changed_by from core_energy.dim_series_state").fetchone()[0]
    assert changed_by == conn.execute("select current_user").fetchone()[0]


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("insert into core_energy.map_model_series values ('ust_1y', 'DGS1')", id="insert"),
        pytest.param("update core_energy.map_model_series set series_code = 'DGS1'", id="update"),
        pytest.param("delete from core_energy.map_model_series where model_col = 'ust_10y'", id="delete"),
        pytest.param("truncate core_energy.map_model_series", id="truncate"),
    ],
)
def test_map_model_series_refuses_writes_other_than_its_refresh(
    platform: Platform, conn: psycopg.Connection, statement: str
) -> None:
    platform.materialize(DIM_SERIES, MAP_MODEL_SERIES)
    before = conn.execute("select * from core_energy.map_model_series order by 1").fetchall()
    assert len(before) == 8
    with pytest.raises(psycopg.errors.RaiseException) as refused:
        conn.execute(statement)
    assert refused.value.diag.message_primary == MAP_REFUSED
    assert conn.execute("select * from core_energy.map_model_series order by 1").fetchall() == before
    # The permission is the refresh's own: it does not leak into the rest of its transaction.
    with pytest.raises(psycopg.errors.RaiseException) as leaked, conn.transaction():
        conn.execute("select core_energy.refresh_map_model_series()")
        conn.execute(statement)
    assert leaked.value.diag.message_primary == MAP_REFUSED

    conn.execute("update core_energy.dim_series set series_code = 'DGS7' where model_col = 'ust_5y'")
    refreshed = platform.materialize(MAP_MODEL_SERIES)
    assert [e.passed for e in refreshed.get_asset_check_evaluations()] == [True]
    assert conn.execute(
        "select series_code from core_energy.map_model_series where model_col = 'ust_5y'"
    ).fetchone() == ("DGS7",)


def _file(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "series.csv"
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def _seed(conn: psycopg.Connection) -> None:
    conn.execute(
        "insert into core_energy.dim_series (model_col, series_code, unit, freq, description, tags) values "
        "('ust_10y', 'DGS10', 'percent', 'D', '10-year', '{rates}'), "
        "('ust_2y', 'DGS2', 'percent', 'D', '2-year', '{rates}'), "
        "('unemployment_rate', 'UNRATE', 'percent', 'M', 'Unemployment', '{labor}')"
    )


UPLOAD = (
    "ust_10y,DGS10,percent,D,10-year yield,rates;treasury",  # description and tags change
    "ust_2y,DGS2,percent,D,2-year,rates",  # unchanged
    "ust_30y,DGS30,percent,D,30-year,rates",  # new
)  # unemployment_rate is not in the file


def _import_runs(dagster_storage_url: str) -> list[tuple[str, str]]:
    url = dagster_storage_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('runs')").fetchone()[0] is None:
            return []
        return conn.execute(
            "select run_id, status from runs where pipeline_name = %s order by create_timestamp", (SERIES_IMPORT_JOB,)
        ).fetchall()


def test_import_without_delete_flag_inserts_and_updates_and_removes_nothing(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    path = _file(tmp_path, *UPLOAD)
    assert main(["series-import", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"plan: {path} into core_energy.dim_series (version 1)" in out
    assert (
        "  insert ust_30y: series_code 'DGS30', unit 'percent', freq 'D', description '30-year', tags ['rates']" in out
    )
    assert "  update ust_10y: description '10-year' -> '10-year yield'; tags ['rates'] -> ['rates', 'treasury']" in out
    assert "  keep   unemployment_rate (series_code 'UNRATE'): not in the file; --delete-missing deletes it" in out
    assert "  1 insert(s), 1 update(s), 0 delete(s), 1 row(s) not in the file kept" in out
    assert "series import: succeeded" in out
    assert "ust_2y" not in out.split("series import:")[0].split("version 1)")[1]  # unchanged rows are not planned

    assert _dim(conn) == {
        "ust_10y": ("DGS10", "percent", "D", "10-year yield", ["rates", "treasury"]),
        "ust_2y": ("DGS2", "percent", "D", "2-year", ["rates"]),
        "ust_30y": ("DGS30", "percent", "D", "30-year", ["rates"]),
        "unemployment_rate": ("UNRATE", "percent", "M", "Unemployment", ["labor"]),
    }
    assert _version(conn) == 2  # one import, one version

    # The import is a run of its named job, and dim_series shows the new version in the graph at once.
    with dagster_instance() as instance:
        [record] = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=DIM_SERIES), limit=1).records
        assert instance.get_run_by_id(record.run_id).job_name == SERIES_IMPORT_JOB
    assert record.asset_observation.data_version == "2"
    metadata = record.asset_observation.metadata
    assert (metadata["inserted"].value, metadata["updated"].value, metadata["deleted"].value) == (1, 1, 0)

    # The same file again plans nothing and runs nothing.
    assert main(["series-import", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 insert(s), 0 update(s), 0 delete(s), 1 row(s) not in the file kept" in out
    assert "nothing to change" in out
    assert _version(conn) == 2


def test_import_with_delete_missing_deletes_the_rows_the_file_lacks(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    # ust_2y gives DGS2 to a new model_col in the same transaction.
    path = _file(tmp_path, UPLOAD[0], "ust_2y_new,DGS2,percent,D,2-year,rates", UPLOAD[2])
    assert main(["series-import", str(path), "--delete-missing"]) == 0
    out = capsys.readouterr().out
    assert "  delete ust_2y (series_code 'DGS2')" in out
    assert "  delete unemployment_rate (series_code 'UNRATE')" in out
    assert "  2 insert(s), 1 update(s), 2 delete(s), 0 row(s) not in the file kept" in out
    assert _dim(conn) == {
        "ust_10y": ("DGS10", "percent", "D", "10-year yield", ["rates", "treasury"]),
        "ust_2y_new": ("DGS2", "percent", "D", "2-year", ["rates"]),
        "ust_30y": ("DGS30", "percent", "D", "30-year", ["rates"]),
    }


def test_dry_run_prints_the_plan_and_changes_nothing(
    cli_env: Settings,
    conn: psycopg.Connection,
    tmp_path: Path,
    dagster_storage_url: str,
    capsys: pytest.CaptureFixture,
) -> None:
    _seed(conn)
    before = (_dim(conn), _version(conn), _import_runs(dagster_storage_url))
    path = _file(tmp_path, *UPLOAD)
    assert main(["series-import", str(path), "--delete-missing", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  delete unemployment_rate (series_code 'UNRATE')" in out
    assert "  1 insert(s), 1 update(s), 1 delete(s), 0 row(s) not in the file kept" in out
    assert "dry run: nothing changed" in out
    assert (_dim(conn), _version(conn), _import_runs(dagster_storage_url)) == before


def test_import_refuses_a_code_held_by_a_kept_row_and_changes_nothing(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    path = _file(tmp_path, "ust_2y_new,DGS2,percent,D,2-year,rates")
    assert main(["series-import", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}, line 2: series_code 'DGS2' is held by 'ust_2y', which is not in the file and stays; "
        "add that row to the file or import with --delete-missing"
    ) in err
    assert _version(conn) == 1


def test_import_run_refuses_a_table_edited_after_its_plan(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    _seed(conn)
    path = _file(tmp_path, *UPLOAD)
    conn.execute("update core_energy.dim_series set unit = 'pct' where model_col = 'ust_2y'")
    result = platform.defs.resolve_job_def(SERIES_IMPORT_JOB).execute_in_process(
        instance=platform.instance,
        run_config={"ops": {"apply_dim_series_import": {"config": {"file": str(path), "expected_version": 1}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert _version(conn) == 2
    assert "ust_30y" not in _dim(conn)


def test_an_import_may_swap_series_codes_between_rows(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    _seed(conn)
    path = _file(tmp_path, "ust_10y,DGS2,percent,D,10-year,rates", "ust_2y,DGS10,percent,D,2-year,rates")
    result = platform.defs.resolve_job_def(SERIES_IMPORT_JOB).execute_in_process(
        instance=platform.instance,
        run_config={"ops": {"apply_dim_series_import": {"config": {"file": str(path)}}}},
    )
    assert result.success
    assert {k: v[0] for k, v in _dim(conn).items()} == {
        "ust_10y": "DGS2",
        "ust_2y": "DGS10",
        "unemployment_rate": "UNRATE",
    }
    [observation] = [e.event_specific_data.asset_observation for e in result.get_asset_observation_events()]
    assert (observation.asset_key, observation.data_version) == (DIM_SERIES, "2")


def test_backup_is_importable_and_retention_removes_old_backups_only(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADING_ASSETS_SERIES_BACKUP_DAYS", "7")
    platform = Platform(Settings.from_env(), platform.instance)
    folder = platform.settings.backup_dir / "dim_series"
    folder.mkdir(parents=True)
    today = datetime.now(UTC).date()
    kept = [backup_name(today - timedelta(days=6), 1), backup_name(today - timedelta(days=1), 1), "notes.txt"]
    expired = [backup_name(today - timedelta(days=7), 1), "dim_series_2001-01-31.csv"]
    for name in kept + expired:
        (folder / name).write_text("old\n")

    result = platform.materialize(DIM_SERIES, DIM_SERIES_BACKUP)
    [materialization] = [e.materialization for e in result.get_asset_materialization_events()]
    assert materialization.metadata["removed"].value == sorted(expired)
    newest = backup_name(today, 1)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, newest])
    assert (folder / "notes.txt").read_text() == "old\n"
    # The backup is a file the import takes back as it is: nothing to change.
    assert plan_series_import(read_dim_series(conn), read_series_config(folder / newest), delete_missing=True).is_empty


def test_plan_lists_inserts_updates_deletes_and_kept_rows() -> None:
    current = pl.DataFrame(
        {
            "model_col": ["a", "b", "c"],
            "series_code": ["A", "B", "C"],
            "unit": ["u", "u", "u"],
            "freq": ["D", "D", "M"],
            "description": ["", "", ""],
            "tags": [["x"], [], ["y", "z"]],
        }
    )
    incoming = pl.DataFrame(
        {
            "model_col": ["a", "b", "d"],
            "series_code": ["A", "B2", "C"],
            "unit": ["u", "u", "v"],
            "freq": ["D", "W", "D"],
            "description": ["", "", "new"],
            "tags": [["x"], ["t"], []],
            "line": [2, 3, 4],
            "source_file": ["f.csv"] * 3,
        }
    )
    keep = plan_series_import(current, incoming, delete_missing=False)
    assert keep.lines() == [
        "insert d: series_code 'C', unit 'v', freq 'D', description 'new', tags []",
        "update b: series_code 'B' -> 'B2'; freq 'D' -> 'W'; tags [] -> ['t']",
        "keep   c (series_code 'C'): not in the file; --delete-missing deletes it",
    ]
    assert [str(p) for p in import_plan_problems(keep, incoming)] == [
        "f.csv, line 4: series_code 'C' is held by 'c', which is not in the file and stays; add that row to the "
        "file or import with --delete-missing"
    ]
    delete = plan_series_import(current, incoming, delete_missing=True)
    assert delete.deletes["model_col"].to_list() == ["c"]
    assert delete.kept.is_empty() and import_plan_problems(delete, incoming) == []
    assert plan_series_import(current, current, delete_missing=True).is_empty


def test_a_column_the_file_lacks_is_left_as_stored(tmp_path: Path) -> None:
    current = pl.DataFrame(
        {
            "model_col": ["a"],
            "series_code": ["A"],
            "unit": ["percent"],
            "freq": ["D"],
            "description": ["kept"],
            "tags": [["x"]],
        }
    )
    path = tmp_path / "codes_only.csv"
    path.write_text("model_col,series_code,freq\na,A2,D\nb,B,M\n")
    plan = plan_series_import(current, read_series_config(path), delete_missing=False)
    assert plan.lines() == [
        "insert b: series_code 'B', unit '', freq 'M', description '', tags []",
        "update a: series_code 'A' -> 'A2'",
    ]
    assert plan.updates.select("unit", "description", "tags").to_dicts() == [
        {"unit": "percent", "description": "kept", "tags": ["x"]}
    ]


def test_expired_backups_by_the_date_in_their_name() -> None:
    today = date(2026, 3, 31)
    names = [
        "dim_series_2026-03-31_v9.csv",
        "dim_series_2026-03-02_v8.csv",  # 29 days old: kept with 30 days
        "dim_series_2026-03-01_v7.csv",  # 30 days old
        "dim_series_2025-12-31.csv",  # the former name, without a version
        "dim_series_2026-02-30_v1.csv",  # no such date: not a backup
        "dim_series_latest.csv",
        "README",
    ]
    assert expired_backups(names, today, 30) == ["dim_series_2025-12-31.csv", "dim_series_2026-03-01_v7.csv"]
    # The newest backup stays whatever its age.
    assert expired_backups(["dim_series_2020-01-01_v3.csv", "dim_series_2020-01-01_v2.csv"], today, 30) == [
        "dim_series_2020-01-01_v2.csv"
    ]
    assert expired_backups([], today, 30) == []
