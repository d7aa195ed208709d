"""The `trading-assets` CLI: runs go through Dagster onto the PostgreSQL instance; errors exit non-zero."""

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from trading_assets.cli import _WithoutStorageNoise, main
from trading_assets.config import Settings
from trading_assets.defs.ops.alerts import build_alert_sensors
from trading_assets.orchestration import dagster_instance
from trading_assets_tests.conftest import SAMPLE_MACRO
from trading_assets_tests.ui_server import REEXECUTE


def _dagster_runs(dagster_storage_url: str) -> list[tuple[str, str]]:
    url = dagster_storage_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('runs')").fetchone()[0] is None:
            return []  # the instance creates its tables on first use
        return conn.execute("select run_id, status from runs order by create_timestamp").fetchall()


def test_load_series_runs_through_dagster_and_lands_in_postgres_run_storage(
    cli_env: Settings, dagster_storage_url: str, conn: psycopg.Connection, capsys: pytest.CaptureFixture
) -> None:
    before = _dagster_runs(dagster_storage_url)
    conn.execute(
        "insert into core_energy.dim_series (model_col, series_code, freq) values ('unemployment_rate', 'UNRATE', 'M')"
    )
    assert main(["load", "series", str(SAMPLE_MACRO / "fred_UNRATE.csv")]) == 0
    out = capsys.readouterr().out
    assert "load series: succeeded" in out
    assert conn.execute("select count(*) from core_energy.fact_series_value").fetchone()[0] == 911

    runs = _dagster_runs(dagster_storage_url)
    [(run_id, status)] = [run for run in runs if run not in before]
    assert status == "SUCCESS"
    assert run_id in out
    url = dagster_storage_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url) as dagster_db:
        materialized = dagster_db.execute(
            "select count(*) from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_id,),
        ).fetchone()[0]
    assert materialized == 34 * 12 - 1  # one per month 1990-01 .. 2023-11


def test_load_series_with_unknown_series_exits_2_and_names_the_line(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("DATE,NOPE\n2020-01-01,1\n")
    assert main(["load", "series", str(bad)]) == 2
    assert f"{bad}, line 2: unknown series 'NOPE' (not in dim_series)" in capsys.readouterr().err
    assert conn.execute("select count(*) from core_energy.fact_series_value").fetchone()[0] == 0


def test_validate_exits_1_on_a_failed_error_check(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture
) -> None:
    conn.execute(
        "insert into core_energy.dim_series (model_col, series_code, freq) values ('unemployment_rate', 'UNRATE', 'M')"
    )
    conn.execute("select core_energy.refresh_map_model_series()")  # the only writer the database allows
    conn.execute("select core_energy.refresh_v_series_wide()")
    conn.execute("insert into core_energy.fact_series_value (series_code, obs_date, value) values ('UNRATE', now(), 4)")
    assert main(["validate"]) == 0
    assert "check core_energy/map_model_series:dim_map_mismatch passed (ERROR)" in capsys.readouterr().out

    with conn.transaction():  # damage done behind the platform's back, forging the refresh's permission
        conn.execute("set local trading_assets.refreshing_map = 'on'")
        conn.execute("delete from core_energy.map_model_series")
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "check core_energy/map_model_series:dim_map_mismatch FAILED (ERROR)" in out
    assert "1 ERROR check(s) failed: core_energy/map_model_series:dim_map_mismatch" in out


def test_db_url_and_migrate(cli_env: Settings, database_url: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["db", "url"]) == 0
    assert capsys.readouterr().out.strip() == database_url
    assert main(["db", "migrate"]) == 0
    assert capsys.readouterr().out.strip() == "applied 0 migration(s)"


def test_bad_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "1990-13-01")
    assert main(["db", "url"]) == 2
    assert "TRADING_ASSETS_START_DATE='1990-13-01' is not an ISO date" in capsys.readouterr().err


def test_load_prices_then_refresh_bars_writes_the_log(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture
) -> None:
    spy = SAMPLE_MACRO.parent / "prices" / "SPY.csv"
    args = ["load", "prices", str(spy), "--symbol", "SPY", "--timezone", "America/New_York", "--calendar", "XNYS"]
    assert main(args) == 0
    assert conn.execute("select count(*) from market.price_histories").fetchone()[0] == 566
    assert conn.execute("select timezone, calendar from market.dim_assets where symbol = 'SPY'").fetchone() == (
        "America/New_York",
        "XNYS",
    )

    assert main(["refresh", "--bars", "--start", "2019-01-01", "--end", "2021-03-31", "--dry-run"]) == 0
    assert "would refresh: job refresh_bars, partitions 2019-01-01..2021-03-01" in capsys.readouterr().out
    assert conn.execute("select count(*) from market.price_bars_1d").fetchone()[0] == 0

    assert main(["refresh", "--bars", "--start", "2019-01-01", "--end", "2021-03-31"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") == 6 and out.count(" assets=1 ") == 6 and "  succeeded" in out
    assert "Total components: 6" in out and "Successful: 6" in out and "Failed: 0" in out
    assert conn.execute("select count(*) from market.price_bars_1d").fetchone()[0] == 566
    # Quarters close on the last XNYS session: 2020-03-31 (a Tuesday) and 2020-12-31.
    canonical = conn.execute(
        "select trade_date::text from market.price_bars_multi_tf_cal_iso "
        "where tf = '3M_CAL' and not is_partial_end and trade_date between '2020-01-01' and '2020-12-31' order by 1"
    ).fetchall()
    assert canonical == [("2020-03-31",), ("2020-06-30",), ("2020-09-30",), ("2020-12-31",)]
    logs = list((cli_env.home / "logs").glob("refresh-*.log"))
    assert len(logs) == 1 and "market/price_bars_1d" in logs[0].read_text()


def test_load_prices_refuses_an_unknown_layout(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,price\n2024-01-02,1\n")
    assert main(["load", "prices", str(bad)]) == 2
    assert "line 1: header ['when', 'price'] lacks column(s) for date, open, high, low" in capsys.readouterr().err


def test_d24_a_failed_ohlc_check_fails_the_refresh_even_with_continue_on_error(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture
) -> None:
    spy = SAMPLE_MACRO.parent / "prices" / "SPY.csv"
    assert main(["load", "prices", str(spy), "--symbol", "SPY", "--calendar", "XNYS"]) == 0
    assert main(["refresh", "--bars", "--start", "2019-01-01", "--end", "2021-03-31"]) == 0
    before = conn.execute("select count(*), sum(high) from market.price_bars_multi_tf").fetchone()

    # Daily bars whose high fell below their low (a bug or a hand edit), queued for the multi-day families.
    conn.execute("update market.price_bars_1d set high = low / 2 where trade_date >= '2020-06-01'")
    conn.execute(
        "insert into market.bars_dirty (family, asset_id, dirty_from) select f, 1, '2020-06-01' from "
        "unnest(array['multi_tf', 'cal_iso', 'cal_us', 'cal_anchor_iso', 'cal_anchor_us']) f "
        "on conflict (family, asset_id) do update set dirty_from = excluded.dirty_from"
    )
    conn.commit()
    capsys.readouterr()
    assert main(["refresh", "--bars", "--continue-on-error", "--start", "2020-06-01", "--end", "2021-03-31"]) == 1
    out = capsys.readouterr().out
    run_id = out.split("(run ")[-1].split(")")[0]
    # One run: the daily bars had nothing to apply; the five families built on the broken rows were rolled back.
    assert out.count("FAILED  (not materialized) checks FAILED: ohlc_consistent") == 5 and "Failed: 5" in out
    assert "  FAILED (table-wide" in out
    # Nothing of the failed runs was kept: the bars are the previous good ones, the marks wait for a fix.
    assert conn.execute("select count(*), sum(high) from market.price_bars_multi_tf").fetchone() == before
    assert conn.execute("select count(*) from market.bars_dirty where dirty_from = '2020-06-01'").fetchone() == (5,)
    # One critical alert for the run (recorded; no channel configured here), even when the run-failure
    # sensor of a daemon started later sees the same failed run.
    assert conn.execute("select severity, title, channel from ops.alerts").fetchall() == [
        ("CRITICAL", "Run failed: refresh_bars", "log")
    ]
    with dagster_instance() as instance:
        failed_run = instance.get_run_by_id(run_id)
        [on_run_failure, _] = build_alert_sensors(cli_env)
        failure_event = instance.all_logs(failed_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event
        on_run_failure(
            dg.build_run_status_sensor_context(
                sensor_name="alert_on_run_failure",
                dagster_instance=instance,
                dagster_run=failed_run,
                dagster_event=failure_event,
            ).for_run_failure()
        )
    assert conn.execute("select count(*) from ops.alerts").fetchone() == (1,)


def test_d23_emas_refuse_stale_bars_unless_skipped_or_all(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    today = datetime.now(UTC).date()
    for symbol, last in (("FRESH", today - timedelta(days=1)), ("OLD", today - timedelta(days=5))):
        rows = [f"{last - timedelta(days=30 - i)},10,11,9,{10 + i / 10},1" for i in range(31)]
        path = tmp_path / f"{symbol}.csv"
        path.write_text("date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
        assert main(["load", "prices", str(path), "--symbol", symbol]) == 0
    start = ["--start", f"{today - timedelta(days=40)}"]
    assert main(["refresh", "--bars", *start]) == 0
    # OLD's last bar closed four days ago, FRESH's about a day ago: a 48 h gate keeps OLD queued.
    capsys.readouterr()
    assert main(["refresh", "--emas", *start]) == 0
    assert re.search(r"Stale ids \(left queued\): \d+ \(OLD\)\n", capsys.readouterr().out)
    built = "select distinct a.symbol from market.ema_multi_tf e join market.dim_assets a using (asset_id) order by 1"
    assert conn.execute(built).fetchall() == [("FRESH",)]
    assert main(["refresh", "--emas", "--staleness-hours", "200", *start]) == 0
    assert conn.execute(built).fetchall() == [("FRESH",), ("OLD",)]
    conn.execute("truncate market.ema_multi_tf_packed")
    conn.execute(
        "insert into market.bars_dirty select 'ema_multi_tf', asset_id, min(trade_date) from market.price_bars_1d "
        "group by asset_id"
    )
    assert main(["refresh", "--all"]) == 0  # from the earliest waiting change; bars first, so no gate
    assert conn.execute(built).fetchall() == [("FRESH",), ("OLD",)]


def test_a_cli_refresh_is_one_run_of_a_named_job_that_the_ui_can_reexecute(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster_graphql.test.utils import execute_dagster_graphql

    days = [datetime(2026, 10, 1).date() + timedelta(days=i) for i in range(40)]
    prices = tmp_path / "X.csv"
    prices.write_text("date,open,high,low,close,volume\n" + "".join(f"{d},10,11,9,10.5,1\n" for d in days))
    assert main(["load", "prices", str(prices)]) == 0
    assert main(["refresh", "--all"]) == 0  # from the earliest waiting change: October and November
    run_id = capsys.readouterr().out.split("(run ")[-1].split(")")[0]
    with dagster_instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.job_name == "refresh_market"
        origin = run.remote_job_origin.repository_origin
        assert (origin.code_location_origin.location_name, origin.repository_name) == (
            "trading_assets",
            "__repository__",
        )
        # Bars before EMAs, in one run: the graph orders them.
        materialized = [
            e.dagster_event.asset_key.path[-1]
            for e in instance.all_logs(run_id)
            if e.is_dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        ]
        assert materialized.index("price_bars_1d") < materialized.index("ema_multi_tf")
        assert len(set(materialized)) == 12

        # What the UI's "Re-execute" button sends, against a workspace that loads the code location.
        location = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="trading_assets.definitions", attribute="defs"),
            location_name="trading_assets",
        )
        with WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(location)) as workspace:
            response = execute_dagster_graphql(
                workspace.create_request_context(),
                REEXECUTE,
                {"params": {"parentRunId": run_id, "strategy": "ALL_STEPS"}},
            )
        launched = response.data["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        child = instance.get_run_by_id(launched["run"]["runId"])
        assert (child.job_name, child.parent_run_id) == ("refresh_market", run_id)
        assert child.tags["dagster/asset_partition_range_start"] == run.tags["dagster/asset_partition_range_start"]


def test_stderr_drops_dagsters_reports_of_the_lost_database_and_keeps_every_other_failure() -> None:
    shown = io.StringIO()
    stderr = _WithoutStorageNoise(shown)
    fallback = "Falling back to storing multiple single-event storage requests...\n"
    for text in (
        "Exception while writing logger call to event log: connection refused\n",
        "Exception while storing event batch: too many retries for DB connection\n",
        fallback,
        "Exception while storing event batch: value too long for type character varying(255)\n",
        fallback,
        "error: the database cannot be reached: connection refused\n",
    ):
        stderr.write(text)
    assert shown.getvalue().splitlines() == [
        "Exception while storing event batch: value too long for type character varying(255)",
        fallback.strip(),
        "error: the database cannot be reached: connection refused",
    ]
