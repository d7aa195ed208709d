"""Bad series input: a clear error naming file, line and reason, and the database left unchanged."""

from pathlib import Path

import psycopg
import pytest

from trading_assets.defs.jobs import SERIES_IMPORT_JOB
from trading_assets.defs.metadata.assets import DIM_SERIES, FACT_SERIES_VALUE
from trading_assets.defs.metadata.series_import import SERIES_IMPORT_OP
from trading_assets.errors import InputError
from trading_assets.orchestration import root_error_message
from trading_assets.sources.series_files import read_observations, read_series_config
from trading_assets_tests.conftest import Platform

HEADER = "model_col,series_code,unit,freq,description,tags"


def _tables(conn: psycopg.Connection) -> tuple:
    return (
        conn.execute("select * from core_energy.dim_series order by 1").fetchall(),
        conn.execute("select * from core_energy.fact_series_value order by 1, 2").fetchall(),
        conn.execute("select * from core_energy.fact_series_value_history order by 1, 2").fetchall(),
    )


def _failure(platform: Platform, *args, **kwargs) -> str:
    result = platform.materialize(*args, raise_on_error=False, **kwargs)
    assert not result.success
    [failure] = result.get_step_failure_events()
    return root_error_message(failure.step_failure_data.error)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        pytest.param("Bad-Col,XBAD,percent,D,bad,", "model_col 'Bad-Col' must be lower snake_case", id="bad-col"),
        pytest.param(
            '"x; drop table core_energy.dim_series",XSQL,percent,D,bad,',
            "model_col 'x; drop table core_energy.dim_series' must be lower snake_case",
            id="sql-injection",
        ),
        pytest.param(
            "ust_10y_again,DGS10,percent,D,again,", "duplicate series_code (first seen on line 5)", id="dup-code"
        ),
        pytest.param("ust_10y,DGS9,percent,D,again,", "duplicate model_col (first seen on line 5)", id="dup-col"),
        pytest.param("too,few,fields", "expected 6 fields, found 3", id="malformed-row"),
        pytest.param("weekly_thing,WTHING,percent,X,bad,", "freq 'X' is not one of D, W, M, Q, A", id="bad-freq"),
        pytest.param(
            "a" * 64 + ",LONG,percent,D,long,", f"model_col '{'a' * 64}' is longer than 63 bytes", id="too-long"
        ),
    ],
)
def test_bad_dim_series_row_names_line_and_changes_nothing(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path, bad_line: str, reason: str
) -> None:
    platform.materialize(DIM_SERIES)
    before = _tables(conn)
    upload = tmp_path / "upload.csv"
    upload.write_text(platform.settings.series_config.read_text() + bad_line + "\n")
    line = len(upload.read_text().splitlines())

    result = platform.defs.resolve_job_def(SERIES_IMPORT_JOB).execute_in_process(
        instance=platform.instance,
        run_config={"ops": {SERIES_IMPORT_OP: {"config": {"file": str(upload), "delete_missing": True}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert f"{upload}, line {line}: {reason}" in root_error_message(failure.step_failure_data.error)
    assert _tables(conn) == before
    assert [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"] == []


def test_bad_seed_file_fails_the_first_observation_and_seeds_nothing(
    platform: Platform, conn: psycopg.Connection
) -> None:
    config = platform.settings.series_config
    config.write_text(config.read_text() + "Bad-Col,XBAD,percent,D,bad,\n")
    message = _failure(platform, DIM_SERIES)
    assert f"{config}, line 10: model_col 'Bad-Col' must be lower snake_case" in message
    assert _tables(conn)[0] == []
    assert conn.execute("select version from core_energy.dim_series_state").fetchone() == (0,)


def test_unknown_series_and_bad_values_are_all_reported_and_nothing_is_written(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    platform.materialize(DIM_SERIES)
    good = tmp_path / "good.csv"
    good.write_text("series_code,obs_date,value\nUNRATE,2020-04-01,14.7\n")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("series_code,obs_date,value\nUNRATE,2020-05-01,13.3\nNOT_A_SERIES,2020-05-01,1.0\n")
    before = _tables(conn)

    message = _failure(platform, FACT_SERIES_VALUE, partition_range=("2020-04-01", "2020-05-01"), files=[good, unknown])
    assert f"{unknown}, line 3: unknown series 'NOT_A_SERIES' (not in dim_series)" in message
    assert _tables(conn) == before


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        pytest.param("DATE,DGS10\n2020-01-02,1.88\n2020-01-03,abc\n", 3, "value 'abc' is not a number", id="text"),
        pytest.param("DATE,DGS10\n2020-01-02,nan\n", 2, "value 'nan' is not a finite number", id="nan"),
        pytest.param("DATE,DGS10\n2020-01-02,inf\n", 2, "value 'inf' is not a finite number", id="inf"),
        pytest.param("DATE,DGS10\n01/02/2020,1.88\n", 2, "date '01/02/2020' is not YYYY-MM-DD", id="date"),
        pytest.param("DATE,DGS10\n2020-01-02,1.88,7\n", 2, "expected 2 fields, found 3", id="fields"),
        pytest.param("when,what\n2020-01-02,1\n", 1, "unrecognised header", id="header"),
        pytest.param("", 1, "file is empty", id="empty"),
    ],
)
def test_malformed_observation_file(tmp_path: Path, content: str, line: int, reason: str) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(content)
    with pytest.raises(InputError) as raised:
        read_observations(path)
    assert any(p.line == line and reason in p.reason and p.file == str(path) for p in raised.value.problems), str(
        raised.value
    )


def test_duplicate_observation_in_a_batch_is_refused(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    platform.materialize(DIM_SERIES)
    a = tmp_path / "a.csv"
    a.write_text("DATE,UNRATE\n2020-04-01,14.7\n2020-04-01,14.8\n")
    message = _failure(platform, FACT_SERIES_VALUE, partition_range=("2020-04-01", "2020-04-01"), files=[a])
    assert f"{a}, line 3: duplicate observation for this series and date (first seen on line 2)" in message
    assert _tables(conn)[1] == []


def test_missing_values_are_counted_not_loaded(platform: Platform, conn: psycopg.Connection, tmp_path: Path) -> None:
    platform.materialize(DIM_SERIES)
    fred = tmp_path / "fred.csv"
    fred.write_text("DATE,DGS10\n2020-12-24,0.94\n2020-12-25,.\n2020-12-28,0.94\n")
    result = platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-12-01", "2020-12-01"), files=[fred])
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["rows"].value, metadata["missing_values"].value) == (2, 1)
    assert conn.execute("select count(*) from core_energy.fact_series_value").fetchone()[0] == 2


def test_config_header_without_required_columns(tmp_path: Path) -> None:
    path = tmp_path / "dim.csv"
    path.write_text("model,series\nx,y\n")
    with pytest.raises(InputError, match=r"line 1: header lacks column\(s\) model_col, series_code, freq"):
        read_series_config(path)


def test_reader_keeps_tags_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "dim.csv"
    path.write_text(f"{HEADER}\n\nust_10y,DGS10,percent,d,10y,rates; treasury\n")
    frame = read_series_config(path)
    assert frame.select("model_col", "freq", "tags", "line").to_dicts() == [
        {"model_col": "ust_10y", "freq": "D", "tags": ["rates", "treasury"], "line": 3}
    ]
