"""Hostile input to the series slice: nothing is lost, and every refusal is one clear line per problem.

A header-only file never empties dim_series (nor its backups); a model_col the wide view cannot take is refused
by the import and by the database; observation files with no rows, bytes that are not UTF-8, NaN or infinite
values or absurd dates are refused before anything is written."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.compute.series import backup_name, expired_backups, plan_series_import
from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.defs.jobs import SERIES_IMPORT_JOB
from trading_assets.defs.metadata.assets import DIM_SERIES, DIM_SERIES_BACKUP
from trading_assets.defs.metadata.series_import import SERIES_IMPORT_OP
from trading_assets.defs.partitions import monthly_partitions, partitions_end
from trading_assets.io.series_store import apply_series_import, read_dim_series
from trading_assets.orchestration import root_error_message
from trading_assets.sources.series_files import read_observations, read_series_config
from trading_assets_tests.conftest import Platform
from trading_assets_tests.fingerprint import changed_tables, table_fingerprints

HEADER = "model_col,series_code,unit,freq,description,tags\n"
CONFIG = PROJECT_ROOT / "config" / "dim_series.csv"
VIEW_COLUMN_REFUSED = (
    "model_col 'date' is refused: core_energy.v_series_wide has a column of that name itself (the observation "
    "date), so the view could not be rebuilt"
)


def _seed(conn: psycopg.Connection) -> None:
    """dim_series as the shipped file has it (eight series), by SQL."""
    frame = read_series_config(CONFIG)
    with conn.cursor() as cur:
        cur.executemany(
            "insert into core_energy.dim_series (model_col, series_code, unit, freq, description, tags) "
            "values (%s, %s, %s, %s, %s, %s)",
            frame.select("model_col", "series_code", "unit", "freq", "description", "tags").rows(),
        )


def _version(conn: psycopg.Connection) -> int:
    return conn.execute("select version from core_energy.dim_series_state").fetchone()[0]


def _model_cols(conn: psycopg.Connection) -> list[str]:
    return [c for (c,) in conn.execute("select model_col from core_energy.dim_series order by 1")]


def _refusals(err: str, path: Path) -> list[str]:
    """The lines of stderr that name `path`, as `FILE, line N: reason`."""
    assert "Traceback" not in err
    return [line.strip().removeprefix("error: ") for line in err.splitlines() if str(path) in line]


def _refused(argv: list[str], conn: psycopg.Connection, capsys: pytest.CaptureFixture, path: Path) -> list[str]:
    """Run the CLI, assert it refused (exit 2) and changed no table; returns its lines naming `path`."""
    before = table_fingerprints(conn)
    assert main(argv) == 2
    assert changed_tables(before, table_fingerprints(conn)) == set()
    return _refusals(capsys.readouterr().err, path)


# --- 1. a file with no rows never empties dim_series -----------------------------------------------------------------


def test_header_only_import_with_delete_missing_is_refused_and_changes_nothing(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    empty = tmp_path / "export.csv"
    empty.write_text(HEADER)
    refusal = (
        f"{empty}, line 1: the file has no rows: with --delete-missing it would delete all 8 rows of "
        "core_energy.dim_series and leave it empty; refused (add --allow-empty if that is what you want)"
    )
    assert _refused(["series-import", str(empty), "--delete-missing"], conn, capsys, empty) == [refusal]
    # A dry run says so too: the real run would be refused.
    assert _refused(["series-import", str(empty), "--delete-missing", "--dry-run"], conn, capsys, empty) == [refusal]
    assert len(_model_cols(conn)) == 8 and _version(conn) == 1

    # Without --delete-missing such a file changes nothing and is not an error.
    assert main(["series-import", str(empty)]) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert len(_model_cols(conn)) == 8 and _version(conn) == 1


def test_allow_empty_empties_the_table_only_when_asked(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    empty = tmp_path / "nothing.csv"
    empty.write_text(HEADER)
    assert main(["series-import", str(empty), "--delete-missing", "--allow-empty"]) == 0
    out = capsys.readouterr().out
    assert "  0 insert(s), 0 update(s), 8 delete(s), 0 row(s) not in the file kept" in out
    assert "series import: succeeded" in out
    assert _model_cols(conn) == [] and _version(conn) == 2


def test_the_import_run_refuses_to_empty_the_table_whoever_launched_it(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    _seed(conn)
    empty = tmp_path / "export.csv"
    empty.write_text(HEADER)
    before = table_fingerprints(conn)
    result = platform.defs.resolve_job_def(SERIES_IMPORT_JOB).execute_in_process(
        instance=platform.instance,
        run_config={"ops": {SERIES_IMPORT_OP: {"config": {"file": str(empty), "delete_missing": True}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert f"{empty}, line 1: the file has no rows" in root_error_message(failure.step_failure_data.error)
    assert changed_tables(before, table_fingerprints(conn)) == set()
    assert result.get_asset_observation_events() == []


def test_the_store_refuses_a_plan_that_empties_the_table(conn: psycopg.Connection, tmp_path: Path) -> None:
    _seed(conn)
    empty = tmp_path / "export.csv"
    empty.write_text(HEADER)
    with pytest.raises(ValueError, match=r"would delete all 8 rows of core_energy\.dim_series"), conn.transaction():
        plan = plan_series_import(read_dim_series(conn), read_series_config(empty), delete_missing=True)
        assert plan.empties_table and plan.remaining == 0
        apply_series_import(conn, plan)
    assert len(_model_cols(conn)) == 8 and _version(conn) == 1


def test_a_header_only_seed_file_seeds_nothing_and_says_so(platform: Platform, conn: psycopg.Connection) -> None:
    config = platform.settings.series_config
    config.write_text(HEADER)
    before = table_fingerprints(conn)
    result = platform.materialize(DIM_SERIES, raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = root_error_message(failure.step_failure_data.error)
    assert f"{config}, line 1: the file has no rows: a new core_energy.dim_series is not seeded from it" in message
    assert changed_tables(before, table_fingerprints(conn)) == set()
    assert _version(conn) == 0


# --- backups: never replaced, never emptied ---------------------------------------------------------------------------


def _backups(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_same_day_fuller_backup_survives_a_new_backup_of_the_same_version(
    platform: Platform, conn: psycopg.Connection
) -> None:
    folder = platform.settings.backup_dir / "dim_series"
    folder.mkdir(parents=True)
    today = datetime.now(UTC).date()
    # The backup of another database (say, the one replaced today) at the same content version, with more rows.
    fuller = HEADER + "".join(f"series_{i},CODE{i},percent,D,series {i},rates\n" for i in range(40))
    (folder / backup_name(today, 1)).write_text(fuller)

    result = platform.materialize(DIM_SERIES, DIM_SERIES_BACKUP)  # a new database: seeded (version 1), backed up
    [metadata] = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    second = backup_name(today, 1, copy=2)
    assert second == f"dim_series_{today:%Y-%m-%d}_v1_2.csv"
    assert (metadata["written"].value, metadata["dagster/uri"].value) == (True, (folder / second).as_uri())
    assert (folder / backup_name(today, 1)).read_text() == fuller
    assert pl.read_csv(folder / second)["model_col"].to_list() == _model_cols(conn)

    # The same content again: nothing written, nothing replaced.
    files = _backups(folder)
    again = platform.materialize(DIM_SERIES_BACKUP)
    [metadata] = [e.materialization.metadata for e in again.get_asset_materialization_events()]
    assert (metadata["written"].value, metadata["dagster/uri"].value) == (False, (folder / second).as_uri())
    assert _backups(folder) == files


def test_an_empty_table_is_not_backed_up_and_expires_no_backup(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADING_ASSETS_SERIES_BACKUP_DAYS", "7")
    platform = Platform(Settings.from_env(), platform.instance)
    platform.materialize(DIM_SERIES, DIM_SERIES_BACKUP)
    folder = platform.settings.backup_dir / "dim_series"
    old = folder / backup_name(datetime.now(UTC).date() - timedelta(days=40), 1)
    old.write_text(HEADER + "ust_10y,DGS10,percent,D,10-year,rates\n")
    files = _backups(folder)
    assert len(files) == 2

    conn.execute("delete from core_energy.dim_series")  # an explicit SQL edit: allowed, and followed
    result = platform.materialize(DIM_SERIES, DIM_SERIES_BACKUP)
    [metadata] = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    assert (metadata["dagster/row_count"].value, metadata["written"].value, metadata["removed"].value) == (0, False, [])
    assert "dagster/uri" not in metadata
    assert _backups(folder) == files


def test_retention_reads_copy_names_and_keeps_the_newest() -> None:
    today = date(2026, 3, 31)
    names = ["dim_series_2026-03-01_v7.csv", "dim_series_2026-03-01_v7_2.csv", "dim_series_2026-03-01_v7_x.csv"]
    # All 30 days old: the newest (the second copy) stays; a name that is not a backup's is never listed.
    assert expired_backups(names, today, 30) == ["dim_series_2026-03-01_v7.csv"]
    assert backup_name(today, 7) == "dim_series_2026-03-31_v7.csv"
    assert backup_name(today, 7, copy=3) == "dim_series_2026-03-31_v7_3.csv"


# --- 2. a model_col the wide view cannot take ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_line", "reasons"),
    [
        pytest.param(
            "date,DGS1,percent,D,1-year,rates",
            ["model_col 'date' is a column of core_energy.v_series_wide itself; choose another name"],
            id="date",
        ),
        pytest.param(
            "UST_10Y,DGS1,percent,D,1-year,rates",
            [
                "model_col 'UST_10Y' must be lower snake_case matching ^[a-z][a-z0-9_]*$",
                "model_col 'UST_10Y' repeats 'ust_10y' (line 5) case-insensitively",
            ],
            id="case-duplicate",
        ),
        pytest.param(
            "ust 1y,DGS1,percent,D,1-year,rates",
            ["model_col 'ust 1y' must be lower snake_case matching ^[a-z][a-z0-9_]*$"],
            id="not-an-identifier",
        ),
        pytest.param(
            "é_rate,DGS1,percent,D,1-year,rates",
            ["model_col 'é_rate' must be lower snake_case matching ^[a-z][a-z0-9_]*$"],
            id="not-ascii",
        ),
        pytest.param(
            f"{'y' * 64},DGS1,percent,D,1-year,rates", [f"model_col '{'y' * 64}' is longer than 63 bytes"], id="long"
        ),
    ],
)
def test_import_refuses_a_model_col_the_view_cannot_take(
    cli_env: Settings,
    conn: psycopg.Connection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    bad_line: str,
    reasons: list[str],
) -> None:
    _seed(conn)
    upload = tmp_path / "upload.csv"
    upload.write_text(CONFIG.read_text() + bad_line + "\n", encoding="utf-8")
    expected = sorted(f"{upload}, line 10: {reason}" for reason in reasons)
    assert sorted(_refused(["series-import", str(upload)], conn, capsys, upload)) == expected
    assert "date" not in _model_cols(conn) and _version(conn) == 1


def test_import_names_the_first_line_that_is_not_utf8(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    upload = tmp_path / "latin1.csv"
    upload.write_bytes(CONFIG.read_bytes() + "ust_1y,DGS1,percent,D,Taux à 1 an,rates\n".encode("latin-1"))
    assert _refused(["series-import", str(upload)], conn, capsys, upload) == [
        f"{upload}, line 10: not UTF-8 text: byte 0xe0 on this line cannot be decoded (save the file as UTF-8)"
    ]
    # Read as what it is, it plans.
    assert main(["series-import", str(upload), "--encoding", "latin-1", "--dry-run"]) == 0
    assert "  insert ust_1y: series_code 'DGS1', unit 'percent', freq 'D', description 'Taux à 1 an'" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("update core_energy.dim_series set model_col = 'date' where model_col = 'ust_10y'", id="update"),
        pytest.param(
            "insert into core_energy.dim_series (model_col, series_code, freq) values ('date', 'DGS1', 'D')",
            id="insert",
        ),
    ],
)
def test_the_database_refuses_a_model_col_named_date(conn: psycopg.Connection, statement: str) -> None:
    _seed(conn)
    before = table_fingerprints(conn)
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(statement)
    assert refused.value.diag.message_primary == VIEW_COLUMN_REFUSED
    assert refused.value.diag.constraint_name == "dim_series_model_col_not_view_column"
    assert changed_tables(before, table_fingerprints(conn)) == set()
    assert _version(conn) == 1


def test_the_constraint_holds_where_triggers_are_skipped(conn: psycopg.Connection) -> None:
    _seed(conn)
    conn.execute("set session_replication_role = replica")  # what some restores do: no user triggers fire
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute("update core_energy.dim_series set model_col = 'date' where model_col = 'ust_10y'")
    assert refused.value.diag.constraint_name == "dim_series_model_col_not_view_column"
    assert "date" not in _model_cols(conn)


def _guard_validated(conn: psycopg.Connection) -> bool | None:
    row = conn.execute(
        "select convalidated from pg_constraint where conname = 'dim_series_model_col_not_view_column'"
    ).fetchone()
    return row[0] if row else None


def test_the_guard_migrates_a_database_that_already_has_such_a_row(conn: psycopg.Connection) -> None:
    migration = (PROJECT_ROOT / "sql" / "013_series_guards.sql").read_text()
    assert _guard_validated(conn) is True
    # Applied again (as on a database from before it, with a series named date), it still applies.
    conn.execute("drop trigger dim_series_model_col_guard on core_energy.dim_series")
    conn.execute("alter table core_energy.dim_series drop constraint dim_series_model_col_not_view_column")
    _seed(conn)
    conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('date', 'DGS1', 'D')")
    with conn.transaction():
        conn.execute(migration)
    assert _guard_validated(conn) is False  # checked on every new write, the old row waits for its rename
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('date', 'X', 'D')")
    with conn.transaction():  # the rename the warning asks for
        conn.execute("insert into core_energy.dim_series (model_col, series_code, freq) values ('d_one', 'X', 'D')")
        conn.execute("delete from core_energy.dim_series where model_col = 'date'")
    with conn.transaction():
        conn.execute(migration)
    assert _guard_validated(conn) is True


# --- 3. observation files ---------------------------------------------------------------------------------------------


def _fred(*rows: str) -> str:
    return "DATE,DGS10\n" + "".join(row + "\n" for row in rows)


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        pytest.param(_fred(), 1, "no observations: the file has a header line and no rows", id="header-only"),
        pytest.param(
            "series_code,obs_date,value\n\n\n", 1, "no observations: the file has a header line and no rows", id="blank"
        ),
        pytest.param(_fred("2020-01-02,1.88", "2020-01-03,NaN"), 3, "value 'NaN' is not a finite number", id="nan"),
        pytest.param(_fred("2020-01-02,-inf"), 2, "value '-inf' is not a finite number", id="inf"),
        pytest.param(_fred("2020-01-02,1e999"), 2, "value '1e999' is not a finite number", id="overflow"),
        pytest.param(_fred("2020-01-02,1_000"), 2, "value '1_000' is not a number", id="underscore"),
        pytest.param(
            _fred("2020-01-02,1.88", "0001-01-01,1.9"),
            3,
            "obs_date 0001-01-01 is before 1000-01-01: not a plausible observation date",
            id="year-1",
        ),
        pytest.param(_fred("20200102,1.88"), 2, "date '20200102' is not YYYY-MM-DD", id="basic-iso-date"),
    ],
)
def test_load_refuses_a_bad_observation_file_with_one_line(
    cli_env: Settings,
    conn: psycopg.Connection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    content: str,
    line: int,
    reason: str,
) -> None:
    _seed(conn)
    path = tmp_path / "fred_DGS10.csv"
    path.write_text(content)
    assert _refused(["load", "series", str(path)], conn, capsys, path) == [f"{path}, line {line}: {reason}"]


def test_load_refuses_year_9999_as_after_the_current_month(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    path = tmp_path / "fred_DGS10.csv"
    path.write_text(_fred("2020-01-02,1.88", "9999-12-31,1.9"))
    end = partitions_end(monthly_partitions(cli_env))
    assert _refused(["load", "series", str(path)], conn, capsys, path) == [
        f"{path}, line 3: obs_date 9999-12-31 is after the current month (on or after {end})"
    ]


def test_load_names_the_line_of_the_first_byte_that_is_not_utf8(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    # Far past the first read buffer, so that the line is counted, not guessed from a chunk.
    days = [date(2000, 1, 1) + timedelta(days=i) for i in range(2000)]
    good = "".join(f"{day},1.5\n" for day in days).encode()
    path = tmp_path / "fred_DGS10.csv"
    path.write_bytes(b"DATE,DGS10\n" + good + b"2010-01-01,1.5\xa0\n2010-01-02,\xff\n")
    assert _refused(["load", "series", str(path)], conn, capsys, path) == [
        f"{path}, line 2002: not UTF-8 text: byte 0xa0 on this line cannot be decoded (save the file as UTF-8)"
    ]


def test_one_bad_file_refuses_the_batch_and_a_good_batch_still_loads(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _seed(conn)
    good = tmp_path / "fred_DGS10.csv"
    good.write_text(_fred("2020-01-02,1.88", "2020-01-03,1.80"))
    empty = tmp_path / "fred_DGS2.csv"
    empty.write_text("DATE,DGS2\n")
    assert _refused(["load", "series", str(good), str(empty)], conn, capsys, empty) == [
        f"{empty}, line 1: no observations: the file has a header line and no rows"
    ]
    assert main(["load", "series", str(good)]) == 0
    assert conn.execute(
        "select obs_date::text, value from core_energy.fact_series_value where series_code = 'DGS10' order by 1"
    ).fetchall() == [("2020-01-02", 1.88), ("2020-01-03", 1.80)]


def test_an_encoding_reads_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_bytes("series_code,obs_date,value\nDGS10,2020-01-02,1.5\n".encode("utf-16"))
    assert read_observations(path, "utf-16").select("series_code", "obs_date", "value").rows() == [
        ("DGS10", date(2020, 1, 2), 1.5)
    ]
