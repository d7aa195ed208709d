"""The series-metadata slice materialized in process against PostgreSQL, from the real FRED files."""

from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg

from trading_assets.defs.metadata.assets import (
    DIM_SERIES,
    DIM_SERIES_BACKUP,
    FACT_SERIES_VALUE,
    MAP_MODEL_SERIES,
    V_SERIES_WIDE,
)
from trading_assets.orchestration import root_error_message
from trading_assets_tests.conftest import SAMPLE_MACRO, Platform

SLICE = [DIM_SERIES, MAP_MODEL_SERIES, FACT_SERIES_VALUE, V_SERIES_WIDE, DIM_SERIES_BACKUP]
MODEL_COLS = [
    "cpi_all_items",
    "nonfarm_payrolls",
    "unemployment_rate",
    "ust_10y",
    "ust_2y",
    "ust_30y",
    "ust_3m",
    "ust_5y",
]


def _fred(series_code: str) -> pd.Series:
    """The file as pandas reads it: FRED's '.' is missing."""
    frame = pd.read_csv(SAMPLE_MACRO / f"fred_{series_code}.csv", na_values=".")
    return frame.set_index(frame.columns[0])[frame.columns[1]].dropna()


def _view_columns(conn: psycopg.Connection, view: str) -> list[str]:
    qualified = view if "." in view else f"core_energy.{view}"
    return [d.name for d in conn.execute(f"select * from {qualified} limit 0").description]  # noqa: S608


def test_whole_slice_from_real_fred_files(platform: Platform, conn: psycopg.Connection) -> None:
    platform.land_sample_series()
    result = platform.materialize(*SLICE, partition_range=("1990-01-01", "2023-11-01"))
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "model_col_valid": True,
        "dim_map_mismatch": True,
        "view_columns_match": True,
        "every_series_observed": True,
        "series_fresh": False,  # the bundled files end in 2021/2023
    }

    dim = conn.execute("select model_col, series_code, freq, tags from core_energy.dim_series order by 1").fetchall()
    assert [row[0] for row in dim] == MODEL_COLS
    assert dim[3] == ("ust_10y", "DGS10", "D", ["rates", "treasury", "yield_curve", "fred"])
    assert conn.execute("select count(*) from core_energy.map_model_series").fetchone()[0] == 8

    counts = dict(conn.execute("select series_code, count(*) from core_energy.fact_series_value group by 1"))
    for code in ["DGS10", "DGS2", "DGS3MO", "DGS30", "DGS5", "UNRATE", "CPIAUCSL", "PAYEMS"]:
        # The first partition (1990-01) also holds everything before it, so the whole file is loaded.
        assert counts[code] == len(_fred(code)), code

    assert _view_columns(conn, "v_series_wide") == ["date", *MODEL_COLS]
    row = conn.execute(
        "select ust_10y, ust_2y, ust_3m from core_energy.v_series_wide where date = '2020-03-09'"
    ).fetchone()
    assert row == (
        _fred("DGS10")["2020-03-09"],
        _fred("DGS2")["2020-03-09"],
        _fred("DGS3MO")["2020-03-09"],
    )
    assert conn.execute(
        "select unemployment_rate, cpi_all_items from core_energy.v_series_wide where date = '2008-10-01'"
    ).fetchone() == (_fred("UNRATE")["2008-10-01"], _fred("CPIAUCSL")["2008-10-01"])
    # Holidays ('.') are not rows: 2020-12-25 has no daily yields.
    assert conn.execute("select count(*) from core_energy.v_series_wide where date = '2020-12-25'").fetchone()[0] == 0
    assert _view_columns(conn, "v_model_wide") == ["date", *MODEL_COLS]

    backups = list((platform.settings.backup_dir / "dim_series").glob("dim_series_*.csv"))
    assert len(backups) == 1
    assert pd.read_csv(backups[0])["model_col"].tolist() == MODEL_COLS


def test_partition_run_loads_only_its_months(platform: Platform, conn: psycopg.Connection) -> None:
    landing = platform.land_sample_series()
    platform.materialize(DIM_SERIES)
    result = platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-03-01", "2020-04-01"))
    assert sorted(e.partition for e in result.get_asset_materialization_events()) == ["2020-03-01", "2020-04-01"]
    first, last, n = conn.execute(
        "select min(obs_date), max(obs_date), count(*) from core_energy.fact_series_value"
    ).fetchone()
    assert (str(first), str(last)) == ("2020-03-01", "2020-04-30")
    expected = sum(
        ((s.index >= "2020-03-01") & (s.index < "2020-05-01")).sum()
        for s in (_fred(p.stem.removeprefix("fred_")) for p in landing.glob("*.csv"))
    )
    assert n == expected
    # Re-running the same partitions gives the same rows and no revisions.
    before = conn.execute("select * from core_energy.fact_series_value order by 1, 2").fetchall()
    platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-03-01", "2020-04-01"))
    assert conn.execute("select * from core_energy.fact_series_value order by 1, 2").fetchall() == before
    assert conn.execute("select count(*) from core_energy.fact_series_value_history").fetchone()[0] == 0


def test_tampered_map_fails_the_blocking_check_and_blocks_the_view(
    platform: Platform, conn: psycopg.Connection
) -> None:
    platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE)
    # Only the refresh may write the map; a session that forges its permission stands for any damage done
    # behind the platform's back, which the blocking check still catches.
    with conn.transaction():
        conn.execute("set local trading_assets.refreshing_map = 'on'")
        conn.execute("update core_energy.map_model_series set series_code = 'DGS1' where model_col = 'ust_10y'")
    conn.execute("comment on view core_energy.v_series_wide is 'before'")

    mismatch = dg.AssetCheckKey(MAP_MODEL_SERIES, "dim_map_mismatch")
    result = platform.run(
        dg.AssetSelection.assets(V_SERIES_WIDE) | dg.AssetSelection.checks(mismatch), raise_on_error=False
    )
    assert not result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "dim_map_mismatch"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["mismatches"].value == 2  # the tampered row, seen from both sides
    assert evaluation.metadata["only_in_dim_series"].value == "ust_10y -> DGS10"
    assert evaluation.metadata["only_in_map"].value == "ust_10y -> DGS1"
    assert result.get_asset_materialization_events() == []
    assert conn.execute("select obj_description('core_energy.v_series_wide'::regclass)").fetchone()[0] == "before"

    # Re-deriving the map repairs it, and the view then builds.
    repaired = platform.materialize(MAP_MODEL_SERIES, V_SERIES_WIDE)
    assert repaired.success
    assert all(e.passed for e in repaired.get_asset_check_evaluations())


def test_column_sorting_first_rebuilds_view_and_keeps_dependent_views(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE)
    conn.execute(
        "create view public.yield_slope as select date, ust_10y - ust_2y as slope from core_energy.v_model_wide"
    )
    conn.execute(
        "insert into core_energy.dim_series (model_col, series_code, unit, freq, description, tags) "
        "values ('aaa_first_yield', 'DGS1', 'percent', 'D', '1-year Treasury yield', '{rates}')"
    )
    plain = tmp_path / "dgs1.csv"
    plain.write_text("series_code,obs_date,value\nDGS1,2020-03-09,0.43\nDGS1,2020-03-10,0.52\n")

    result = platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE)
    assert result.success
    platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-03-01", "2020-03-01"), files=[plain])

    assert _view_columns(conn, "v_series_wide") == ["date", "aaa_first_yield", *MODEL_COLS]
    assert conn.execute(
        "select aaa_first_yield from core_energy.v_series_wide where date = '2020-03-10'"
    ).fetchone() == (0.52,)
    # Dependent views survive the drop-and-create: the model view follows every series, and a user's
    # view on top of it still answers.
    assert _view_columns(conn, "v_model_wide") == ["date", "aaa_first_yield", *MODEL_COLS]
    assert _view_columns(conn, "public.yield_slope") == ["date", "slope"]
    assert conn.execute("select count(*) from public.yield_slope").fetchone()[0] == 2


def test_refresh_fails_whole_when_a_dependent_view_no_longer_compiles(
    platform: Platform, conn: psycopg.Connection
) -> None:
    platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE)
    conn.execute("create view public.uses_5y as select date, ust_5y from core_energy.v_series_wide")
    conn.execute("delete from core_energy.dim_series where model_col = 'ust_5y'")
    platform.materialize(DIM_SERIES, MAP_MODEL_SERIES)

    result = platform.materialize(V_SERIES_WIDE, raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = root_error_message(failure.step_failure_data.error)
    assert "view public.uses_5y depends on core_energy.v_series_wide and no longer compiles" in message
    # Nothing changed: the old view with ust_5y and the dependent view are both still there.
    assert "ust_5y" in _view_columns(conn, "v_series_wide")
    assert _view_columns(conn, "public.uses_5y") == ["date", "ust_5y"]


def test_revised_value_updates_row_and_keeps_old_value_in_history(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    platform.materialize(DIM_SERIES)
    first = tmp_path / "first.csv"
    first.write_text("series_code,obs_date,value\nUNRATE,2020-04-01,14.7\nUNRATE,2020-05-01,13.3\n")
    revised = tmp_path / "revised.csv"
    revised.write_text("series_code,obs_date,value\nUNRATE,2020-04-01,14.8\nUNRATE,2020-05-01,13.3\n")

    platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-04-01", "2020-05-01"), files=[first])
    result = platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-04-01", "2020-05-01"), files=[revised])
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["inserted"].value, metadata["revised"].value, metadata["unchanged"].value) == (0, 1, 1)

    assert conn.execute(
        "select value, source_file from core_energy.fact_series_value where obs_date = '2020-04-01'"
    ).fetchone() == (14.8, str(revised))
    assert conn.execute(
        "select series_code, obs_date::text, value, source_file from core_energy.fact_series_value_history"
    ).fetchall() == [("UNRATE", "2020-04-01", 14.7, str(first))]

    # The same file again is not a revision.
    platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-04-01", "2020-05-01"), files=[revised])
    assert conn.execute("select count(*) from core_energy.fact_series_value_history").fetchone()[0] == 1


def test_the_series_file_seeds_a_new_database_once_and_never_overwrites_sql_edits(
    platform: Platform, conn: psycopg.Connection
) -> None:
    # The first observation of a database whose dim_series never held a row seeds it from the file.
    seeded = platform.materialize(DIM_SERIES)
    [observation] = [e.event_specific_data.asset_observation for e in seeded.get_asset_observation_events()]
    assert observation.data_version == "1"
    assert observation.metadata["seeded"].value == 8
    assert [r[0] for r in conn.execute("select model_col from core_energy.dim_series order by 1")] == MODEL_COLS

    # Edits by SQL are the truth from then on: a changed file, or no file at all, overwrites nothing.
    conn.execute("delete from core_energy.dim_series where model_col in ('ust_30y', 'ust_3m')")
    conn.execute(
        "update core_energy.dim_series set description = 'Unemployment rate (SA)' where series_code = 'UNRATE'"
    )
    conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('ust_1y', 'DGS1', 'D')")
    config = platform.settings.series_config
    config.write_text(config.read_text() + "ust_7y,DGS7,percent,D,7-year,rates\n")
    expected = conn.execute("select * from core_energy.dim_series order by 1").fetchall()

    platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE, DIM_SERIES_BACKUP)
    config.unlink()
    observed = platform.materialize(DIM_SERIES)
    assert conn.execute("select * from core_energy.dim_series order by 1").fetchall() == expected
    [observation] = [e.event_specific_data.asset_observation for e in observed.get_asset_observation_events()]
    assert observation.data_version == "4"  # seed, then three edits (each its own transaction)
    assert "seeded" not in observation.metadata
    assert dict(conn.execute("select model_col, series_code from core_energy.map_model_series")) == {
        "cpi_all_items": "CPIAUCSL",
        "nonfarm_payrolls": "PAYEMS",
        "unemployment_rate": "UNRATE",
        "ust_10y": "DGS10",
        "ust_1y": "DGS1",
        "ust_2y": "DGS2",
        "ust_5y": "DGS5",
    }
    assert _view_columns(conn, "v_series_wide") == [
        "date", "cpi_all_items", "nonfarm_payrolls", "unemployment_rate", "ust_10y", "ust_1y", "ust_2y", "ust_5y"
    ]  # fmt: skip

    # Emptied by SQL, it stays empty: only a database that never held a row is seeded.
    config.write_text("model_col,series_code,unit,freq,description,tags\nust_7y,DGS7,percent,D,7-year,rates\n")
    conn.execute("delete from core_energy.dim_series")
    platform.materialize(DIM_SERIES)
    assert conn.execute("select count(*) from core_energy.dim_series").fetchone()[0] == 0
