"""The replaced systems' runbook, kept: per-asset staleness against the asset's calendar, real gap flags on the
daily bars, and alert levels with grouping and delivery while the database is down."""

import io
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import exchange_calendars
import pandas as pd
import polars as pl
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.compute.staleness import stale_assets
from trading_assets.config import Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.checks import gaps_against_calendar
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.ops.alerts import alerts_of_run, check_failure_alerts
from trading_assets.io.alerts import Alert, send_alert, unrecorded_path
from trading_assets.io.database import start_embedded, stop_embedded, with_database
from trading_assets.io.ema_store import EMA_FAMILIES
from trading_assets.io.migrations import migrate
from trading_assets.io.run_logs import day_log
from trading_assets.orchestration import prepare_environment, run_job
from trading_assets.progress import progress_line
from trading_assets_tests.conftest import SHARED_DATA, Platform
from trading_assets_tests.test_alerts import Listener, _closed_port

COINBASE_BTC = SHARED_DATA / "daily" / "lean_crypto_coinbase_btcusd_trade_1d.csv"
LEAN_SPY = SHARED_DATA / "daily" / "lean_equity_usa_spy_1d.csv"
needs_shared = pytest.mark.skipif(not COINBASE_BTC.exists(), reason="../shared/data is not beside the project")
BARS = dg.AssetSelection.assets(*BAR_KEYS.values()) - TABLE_CHECKS


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _newest(calendar: str, timezone: str, closed: datetime | None) -> pl.DataFrame:
    return pl.DataFrame(
        {"asset_id": [1], "calendar": [calendar], "timezone": [timezone], "newest_close": [closed]},
        schema={
            "asset_id": pl.Int64,
            "calendar": pl.String,
            "timezone": pl.String,
            "newest_close": pl.Datetime("us", "UTC"),
        },
    )


def test_staleness_is_measured_from_the_last_session_the_calendar_expected() -> None:
    # Friday 2024-05-24's bar of an XNYS asset closes at midnight in New York (04:00 UTC Saturday).
    friday = _newest("XNYS", "America/New_York", datetime(2024, 5, 25, 4, tzinfo=UTC))
    monday_morning = datetime(2024, 5, 27, 6, tzinfo=UTC)  # 50 h later; Monday is Memorial Day
    assert stale_assets(friday, monday_morning, 48) == []
    after_the_holiday = datetime(2024, 5, 28, 6, tzinfo=UTC)  # Tuesday morning: still no session missed
    assert stale_assets(friday, after_the_holiday, 48) == []
    # Tuesday's session closed at 04:00 UTC Wednesday: Friday's bar is then 96 h behind it.
    assert stale_assets(friday, datetime(2024, 5, 29, 6, tzinfo=UTC), 48) == [1]
    assert stale_assets(friday, datetime(2024, 5, 29, 6, tzinfo=UTC), 100) == []
    # An ordinary weekend: Friday 2024-06-07's bar on Monday 06:00 UTC.
    ordinary = _newest("XNYS", "America/New_York", datetime(2024, 6, 8, 4, tzinfo=UTC))
    assert stale_assets(ordinary, datetime(2024, 6, 10, 6, tzinfo=UTC), 48) == []
    # 24/7: wall-clock hours since the bar closed; no bar at all is stale.
    crypto = _newest("24/7", "UTC", datetime(2024, 6, 8, tzinfo=UTC))
    assert stale_assets(crypto, datetime(2024, 6, 9, 23, tzinfo=UTC), 48) == []
    assert stale_assets(crypto, datetime(2024, 6, 10, 1, tzinfo=UTC), 48) == [1]
    assert stale_assets(_newest("XNYS", "America/New_York", None), monday_morning, 48) == [1]


def _prices(path: Path, days: list[date]) -> Path:
    path.write_text("date,open,high,low,close,volume\n" + "".join(f"{d},10,11,9,10.5,1\n" for d in days))
    return path


def test_a_stale_asset_waits_alone_is_listed_and_alerted_once(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path, listener: Listener
) -> None:
    today = datetime.now(UTC).date()
    fresh_days = [today - timedelta(days=40 - i) for i in range(40)]
    months = (f"{(today - timedelta(days=70)):%Y-%m}-01", f"{today:%Y-%m}-01")
    files = [{"path": str(_prices(tmp_path / f"F{i}.csv", fresh_days)), "symbol": f"FRESH{i}"} for i in range(3)]
    stale_file = _prices(tmp_path / "old.csv", [d - timedelta(days=20) for d in fresh_days])
    files.append({"path": str(stale_file), "symbol": "DELISTED"})
    platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=months,
        ops={"market__price_histories": {"files": files}},
    )
    assert platform.run(BARS, partition_range=months).success
    [stale_id] = conn.execute("select asset_id from market.dim_assets where symbol = 'DELISTED'").fetchone()

    # As automation runs them: only what changed, with the freshness gate on.
    emas = platform.run(dg.AssetSelection.assets(*EMA_KEYS.values()) - TABLE_CHECKS, partition_range=months)
    assert emas.success
    built = conn.execute("select distinct a.symbol from market.ema_multi_tf join market.dim_assets a using (asset_id)")
    assert sorted(built.fetchall()) == [("FRESH0",), ("FRESH1",), ("FRESH2",)]
    waiting = conn.execute(
        "select count(*) from market.bars_dirty where asset_id = %s and family like 'ema%%'", (stale_id,)
    )
    assert waiting.fetchone() == (len(EMA_FAMILIES),)
    # The runbook's "check state": what the last run did per asset and family, and what still waits.
    state = conn.execute(
        "select symbol, last_run_id, rows_last_written > 0, dirty_from is not null, last_source_date "
        "from market.v_refresh_state where family = 'ema_multi_tf' order by symbol"
    ).fetchall()
    assert state == [
        ("DELISTED", None, None, True, fresh_days[-1] - timedelta(days=20)),
        *((f"FRESH{i}", emas.run_id, True, False, fresh_days[-1]) for i in range(3)),
    ]
    checks = [e for e in emas.get_asset_check_evaluations() if e.check_name == "bars_fresh"]
    assert len(checks) == len(EMA_FAMILIES) and not any(e.passed for e in checks)
    assert {e.severity for e in checks} == {dg.AssetCheckSeverity.ERROR}
    assert checks[0].metadata["stale_asset_ids"].value == [stale_id]
    ema_multi_tf = [m for m in emas.get_asset_materialization_events() if m.asset_key == EMA_KEYS["ema_multi_tf"]]
    assert ema_multi_tf[-1].materialization.metadata["stale_assets_waiting"].value == [f"{stale_id} (DELISTED)"]

    # One ERROR alert names the stale ids; the next day's run with the same stale asset is grouped, not resent.
    settings = replace(platform.settings, alert_url=f"{listener.url}/hook")
    [alert] = check_failure_alerts([(emas.run_id, e) for e in checks], "test")
    assert alert.severity == "ERROR" and f"Bars stale for IDs: [{stale_id}] (DELISTED)" in alert.body
    [repeat] = check_failure_alerts([("next-run", e) for e in checks], "test")
    assert send_alert(settings, platform.settings.database_url, alert) == ["sent"]
    assert send_alert(settings, platform.settings.database_url, repeat) == ["grouped"]
    assert len(listener.received) == 1
    # After the quiet period the same condition is sent again.
    later = replace(settings, alert_quiet_minutes=0)
    [third] = check_failure_alerts([("third-run", e) for e in checks], "test")
    assert send_alert(later, platform.settings.database_url, third) == ["sent"]


def _missing_24_7(days: pd.Series) -> dict[date, int]:
    """Independent reference: for each row after a hole in an every-day series, the days in the hole."""
    gaps = days.diff().dt.days.fillna(1).astype(int) - 1
    return {d.date(): int(g) for d, g in zip(days, gaps, strict=True) if g > 0}


def _missing_sessions(days: pd.Series, calendar: str) -> dict[date, int]:
    """Independent reference: for each row, the calendar's sessions strictly between it and the previous row."""
    sessions = exchange_calendars.get_calendar(calendar, start=str(days.min().date())).sessions_in_range(
        days.min(), days.max()
    )
    before = sessions.searchsorted(pd.DatetimeIndex(days), side="left")  # sessions before the row's day
    up_to = sessions.searchsorted(pd.DatetimeIndex(days), side="right")  # sessions on or before it
    between = before[1:] - up_to[:-1]
    return {d.date(): int(g) for d, g in zip(days[1:], between, strict=True) if g > 0}


def _flags(conn: psycopg.Connection, symbol: str) -> dict[date, int]:
    rows = conn.execute(
        "select trade_date, count_missing_days, is_missing_days from market.price_bars_1d "
        "join market.dim_assets using (asset_id) where symbol = %s and count_missing_days > 0 or "
        "(symbol = %s and is_missing_days) order by trade_date",
        (symbol, symbol),
    ).fetchall()
    assert all(flag for _, _, flag in rows)
    return {day: count for day, count, _ in rows}


@needs_shared
def test_gap_flags_on_real_files_match_the_calendar(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    spy = pd.read_csv(LEAN_SPY, header=None, usecols=[0], names=["stamp"])
    spy_days = pd.to_datetime(spy["stamp"].str[:8])
    keep = spy_days[(spy_days >= "2015-01-01") & (spy_days < "2016-01-01")]
    dropped = {pd.Timestamp("2015-07-02"), pd.Timestamp("2015-07-06"), pd.Timestamp("2015-11-27")}
    holes = tmp_path / "spy_2015.csv"
    lines = LEAN_SPY.read_text().splitlines()
    holes.write_text(
        "\n".join(
            line for line in lines if pd.Timestamp(line[:8]) in set(keep) and pd.Timestamp(line[:8]) not in dropped
        )
        + "\n"
    )
    files = [
        {"path": str(COINBASE_BTC), "symbol": "CBBTC"},
        {
            "path": str(holes),
            "symbol": "SPY",
            "price_divisor": 10000.0,
            "calendar": "XNYS",
            "timezone": "America/New_York",
        },
    ]
    first = platform.settings.start_date.replace(day=1).isoformat()
    months = (first, "2019-12-01")
    platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=months,
        ops={"market__price_histories": {"files": files}},
    )
    assert platform.run(BARS, partition_range=months).success

    btc = pd.read_csv(COINBASE_BTC, header=None, usecols=[0], names=["stamp"])
    btc_days = pd.to_datetime(btc["stamp"].str[:8]).sort_values().reset_index(drop=True)
    btc_btc = btc_days[btc_days < "2020-01-01"].reset_index(drop=True)
    expected_btc = _missing_24_7(btc_btc)
    assert max(expected_btc.values()) == 20  # PROVENANCE: two gaps > 5 days in 2014-2015, the longest 21 days
    assert _flags(conn, "CBBTC") == expected_btc
    spy_rows = pd.Series(sorted(d for d in keep if d not in dropped))
    expected_spy = _missing_sessions(spy_rows, "XNYS")
    assert expected_spy == {date(2015, 7, 7): 2, date(2015, 11, 30): 1}  # 07-03 is a holiday, 11-26 too
    assert _flags(conn, "SPY") == expected_spy

    # A run over one later month continues from the stored row before it: the same flags.
    assert platform.run(BARS, partition_range=("2015-07-01", "2015-07-01"), rebuild="all").success
    assert _flags(conn, "SPY") == expected_spy
    # The multi-day family agrees: a 7-row block's gap count is the sum of its rows' flags after its first row.
    blocks = conn.execute(
        """
        with daily as (
            select d.asset_id, d.trade_date, d.count_missing_days, m.bar_seq,
                   row_number() over (partition by d.asset_id, m.bar_seq order by d.trade_date) as pos
            from market.price_bars_1d d
            join market.price_bars_multi_tf m on m.asset_id = d.asset_id and m.trade_date = d.trade_date and m.tf = '7D'
        )
        select m.count_missing_days, coalesce(sum(d.count_missing_days) filter (where d.pos > 1), 0)
        from market.price_bars_multi_tf m join daily d
          on d.asset_id = m.asset_id and d.bar_seq = m.bar_seq and d.trade_date <= m.trade_date
        where m.tf = '7D' group by m.asset_id, m.bar_seq, m.trade_date, m.count_missing_days
        """
    ).fetchall()
    assert blocks and all(stored == summed for stored, summed in blocks)
    assert sum(1 for stored, _ in blocks if stored > 0) > 0

    # The runbook's query finds them, and the check fails naming them.
    runbook = conn.execute("select count(*) filter (where is_missing_days) from market.price_bars_1d").fetchone()
    assert runbook == (len(expected_btc) + len(expected_spy),)
    check = platform.run(dg.AssetSelection.checks(gaps_against_calendar.check_key), raise_on_error=False)
    [evaluation] = check.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["missing_sessions"].value == sum(expected_btc.values()) + 3
    assert "2015-07-07" in evaluation.metadata["rows"].value


def test_a_cli_command_that_cannot_reach_the_database_alerts_critical_without_it(
    settings: Settings, listener: Listener, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRADING_ASSETS_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere")
    monkeypatch.setenv("TRADING_ASSETS_ALERT_URL", f"{listener.url}/hook")
    monkeypatch.setenv("TRADING_ASSETS_ALERT_MIN_SEVERITY", "CRITICAL")
    assert main(["refresh", "--bars"]) == 3
    [(_, body)] = listener.received
    assert body["severity"] == "CRITICAL" and body["title"] == "Database connection failure"
    assert body["body"].startswith("trading-assets refresh:")
    [kept] = [json.loads(line) for line in unrecorded_path(Settings.from_env()).read_text().splitlines()]
    assert kept["status"] == "sent" and "database unreachable" in kept["error"]


def test_a_run_that_loses_its_database_alerts_critical_and_the_record_follows(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server of its own, so that the test can stop it (the shared one serves every other test).
    pgdata = tmp_path / "pg"
    url = with_database(start_embedded(pgdata), "postgres")
    migrate(url)
    monkeypatch.setenv("TRADING_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_ASSETS_DATABASE_URL", url)
    monkeypatch.setenv("TRADING_ASSETS_ALERT_URL", f"{listener.url}/hook")
    settings = Settings.from_env()
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            platform = Platform(settings, instance)
            prices = _prices(tmp_path / "x.csv", [date(2024, 1, 2), date(2024, 1, 3)])
            ops = {"market__price_histories": {"files": [{"path": str(prices), "symbol": "X"}]}}
            month = ("2024-01-01", "2024-01-01")
            assert platform.run(dg.AssetSelection.assets(PRICE_HISTORIES), partition_range=month, ops=ops).success
            stop_embedded(pgdata)
            failed = platform.run(BARS, partition_range=month, raise_on_error=False)
            assert not failed.success
            [alert] = alerts_of_run(instance, failed.run_id)
            assert alert.severity == "CRITICAL" and "database connection failure" in alert.body
            assert send_alert(settings, url, alert) == ["sent"]
            [(_, body)] = listener.received
            assert body["severity"] == "CRITICAL" and failed.run_id in body["body"]
        # Back up: the next alert records the one delivered while it was down.
        start_embedded(pgdata)
        assert send_alert(settings, url, Alert("INFO", "back", "", "test")) == ["below_threshold"]
        with psycopg.connect(url) as conn:
            rows = conn.execute("select severity, status, error from ops.alerts order by created_at").fetchall()
        assert [r[:2] for r in rows] == [("CRITICAL", "sent"), ("INFO", "below_threshold")]
        assert "database unreachable" in rows[0][2]
        assert not unrecorded_path(settings).exists()
    finally:
        stop_embedded(pgdata)


def test_every_run_writes_the_day_log_as_it_goes_and_old_logs_are_removed(
    cli_env: Settings, conn: psycopg.Connection, tmp_path: Path
) -> None:
    logs = cli_env.logs_dir
    today = datetime.now(UTC).date()
    expired, kept = day_log(logs, today - timedelta(days=31)), day_log(logs, today - timedelta(days=30))
    other = logs / "notes.txt"
    for path in (expired, kept, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("earlier\n")
    prices = _prices(tmp_path / "x.csv", [date(2024, 1, 2), date(2024, 1, 3)])
    month = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-01"}

    def files(path: str) -> dict:
        return {"ops": {"market__price_histories": {"config": {"files": [{"path": path, "symbol": "X"}]}}}}

    # On the instance the CLI, the daemon and the UI share: a named job failing, then the job the UI
    # launches for a selection of assets.
    prepare_environment(cli_env)
    failed = run_job("load_prices", tags=month, run_config=files("/nonexistent/x.csv"))
    assert not failed.success
    assert run_job("__ASSET_JOB", tags=month, run_config=files(str(prices)), assets=[PRICE_HISTORIES]).success
    lines = day_log(logs, today).read_text().splitlines()
    failed_lines = [line for line in lines if f"run={failed.run_id[:8]}" in line]
    texts = [line.split(" job=load_prices ", 1)[1] for line in failed_lines]
    # Event by event, in the order they happened (so `tail -f` follows a run), the failures greppable.
    assert texts[0] == "run started" and texts[-1] == "run FAILED"
    assert texts.index("market__price_histories started") < texts.index("run FAILED")
    errors = [line for line in failed_lines if " ERROR " in line]
    assert len(errors) == 2 and all("FAILED" in line for line in errors)
    assert any("cannot read file" in line and "/nonexistent/x.csv" in line for line in errors)
    assert any("job=__ASSET_JOB market/price_histories [2024-01-01] materialized" in line for line in lines)

    assert main(["clean-logs"]) == 0
    assert not expired.exists() and kept.exists() and other.exists() and day_log(logs, today).exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only(cli_env: Settings, tmp_path: Path) -> None:
    assert progress_line(0, 12, 0, 0, 3) == "0/12 steps, 3s elapsed"
    assert progress_line(3, 12, 500, 1000, 42) == "3/12 steps, 500/1000 assets, 42s elapsed, ~102s remaining"
    assert progress_line(1, 12, 0, 0, 60).endswith("~11m remaining")
    assert progress_line(6, 12, 0, 0, 30) == "6/12 steps, 30s elapsed, ~30s remaining"
    prepare_environment(cli_env)
    prices = _prices(tmp_path / "x.csv", [date(2024, 1, 2) + timedelta(days=i) for i in range(60)])
    tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-02-01"}
    files = {"ops": {"market__price_histories": {"config": {"files": [{"path": str(prices), "symbol": "X"}]}}}}
    pipe, terminal = io.StringIO(), _Terminal()
    assert run_job("load_prices", tags=tags, run_config=files, progress=pipe).success
    assert pipe.getvalue() == ""
    assert run_job("refresh_bars", tags=tags, progress=terminal).success
    final = terminal.getvalue().rsplit("\r", 1)[-1]
    assert re.fullmatch(r"(\d+)/\1 steps, \d+s elapsed\n", final), final
