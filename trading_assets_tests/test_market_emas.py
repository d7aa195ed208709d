"""EMAs through Dagster on PostgreSQL: against TA-Lib on real data, incremental == full (including a late
revision), the packed storage behind the long views, rejects, the freshness gate and period changes."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import psycopg
import pytest
import talib
from psycopg import sql

from trading_assets.config import Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market import assets as market_assets
from trading_assets.defs.market import emas as emas_module
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.ema_checks import FRESHNESS_GATE
from trading_assets.defs.market.emas import EMA_KEYS, stale_assets
from trading_assets.io import row_counts
from trading_assets.io.ema_store import EMA_FAMILIES
from trading_assets.io.market_store import BAR_TABLES
from trading_assets_tests.conftest import SHARED_DATA, Platform
from trading_assets_tests.fingerprint import relation_file, stored_rows

BTC = SHARED_DATA / "daily" / "binance_BTCUSDT_1d.csv"
needs_shared = pytest.mark.skipif(not BTC.exists(), reason="../shared/data is not beside the project")
# As the refresh jobs run them: the table-wide checks run in the validate job.
MARKET = dg.AssetSelection.assets(*BAR_KEYS.values(), *EMA_KEYS.values()) - TABLE_CHECKS


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "2019-01-01")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(Settings.from_env(), instance)


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("date,open,high,low,close,volume\n" + "".join(r + "\n" for r in rows))
    return path


def _load(platform: Platform, path: Path, months: tuple[str, str], symbol: str = "BTCUSDT") -> None:
    platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=months,
        ops={"market__price_histories": {"files": [{"path": str(path), "symbol": symbol}]}},
    )


def _build(platform: Platform, months: tuple[str, str], full_window: bool = False) -> dg.ExecuteInProcessResult:
    ops = {f"market__{family}": {"skip_stale_check": True} for family in EMA_FAMILIES}
    rebuild = "all" if full_window else "changed"
    return platform.run(MARKET, partition_range=months, ops=ops, raise_on_error=False, rebuild=rebuild)


def _emas(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {
        family: conn.execute(
            f"select asset_id, tf, period, trade_date, tf_days, roll, ema, ema_bar, is_partial_end "  # noqa: S608
            f"from market.{family} order by 1, 2, 3, 4"
        ).fetchall()
        for family in EMA_FAMILIES
    }


def _btc_rows(first: str, last: str) -> list[str]:
    frame = pl.read_csv(BTC).filter(pl.col("timestamp").is_between(pl.lit(first), pl.lit(last)))
    return [",".join(str(v) for v in row) for row in frame.iter_rows()]


@needs_shared
def test_real_data_tf_1d_matches_talib_and_weekly_bars_match_their_closes(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    _load(platform, _write(tmp_path / "btc.csv", _btc_rows("2019-01-01", "2020-12-31")), ("2019-01-01", "2020-12-01"))
    result = _build(platform, ("2019-01-01", "2020-12-01"))
    assert result.success
    closes = np.array([r[0] for r in conn.execute("select close from market.price_bars_1d order by trade_date")])
    for period in (9, 50, 200):
        ours = conn.execute(
            "select ema, ema_bar from market.ema_multi_tf where tf = '1D' and period = %s order by trade_date",
            (period,),
        ).fetchall()
        reference = talib.EMA(closes, timeperiod=period)[period - 1 :]
        np.testing.assert_allclose([r[0] for r in ours], reference, rtol=1e-9)
        np.testing.assert_allclose([r[1] for r in ours], reference, rtol=1e-9)
    weekly = np.array(
        [
            c
            for (c,) in conn.execute(
                "select close from market.price_bars_multi_tf_cal_iso where tf = '1W_CAL_ISO' and not is_partial_end "
                "order by trade_date"
            )
        ]
    )
    canonical = conn.execute(
        "select ema_bar from market.ema_multi_tf_cal_iso where tf = '1W_CAL_ISO' and period = 10 and not roll "
        "order by trade_date"
    ).fetchall()
    np.testing.assert_allclose([r[0] for r in canonical], talib.EMA(weekly, timeperiod=10)[9:], rtol=1e-9)
    # The long view is the packed rows unnested: six periods per row, each from its own seed on.
    packed = conn.execute("select count(*) from market.ema_multi_tf_packed where tf = '1D'").fetchone()[0]
    per_period = conn.execute(
        "select period, count(*) from market.ema_multi_tf where tf = '1D' group by 1 order by 1"
    ).fetchall()
    assert per_period == [(p, packed - p + 1) for p in (9, 10, 21, 50, 100, 200)]
    union = conn.execute("select alignment_source, count(*) from market.ema_multi_tf_u group by 1 order by 1")
    assert {s for s, _ in union} == {
        "multi_tf",
        "multi_tf_cal_iso",
        "multi_tf_cal_us",
        "multi_tf_cal_anchor_iso",
        "multi_tf_cal_anchor_us",
        "multi_tf_v2",
    }


@needs_shared
def test_d20_d21_day_by_day_and_a_late_revision_equal_a_full_rebuild_and_the_union_follows(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    rows = _btc_rows("2019-06-01", "2020-03-10")
    _load(platform, _write(tmp_path / "base.csv", rows[:-3]), ("2019-06-01", "2020-03-01"))
    assert _build(platform, ("2019-06-01", "2020-03-01")).success
    for number, row in enumerate(rows[-3:]):  # three more days, one run each
        _load(platform, _write(tmp_path / f"day{number}.csv", [row]), ("2020-03-01", "2020-03-01"))
        assert _build(platform, ("2020-03-01", "2020-03-01")).success
    day_by_day = _emas(conn)
    assert _build(platform, ("2019-01-01", "2020-03-01"), full_window=True).success
    assert _emas(conn) == day_by_day
    revised = rows[40].split(",")
    _load(platform, _write(tmp_path / "rev.csv", [",".join([*revised[:4], "9999.5", revised[5]])]), ("2019-07-01",) * 2)
    # What automation runs after the revision: from its month through the current one, changed days only.
    assert _build(platform, ("2019-07-01", "2020-03-01")).success
    incremental = _emas(conn)
    assert incremental["ema_multi_tf"] != day_by_day["ema_multi_tf"]
    # §D 21: the union shows the re-anchored rows at once (the original's watermark copy kept the stale ones).
    union = conn.execute(
        "select asset_id, tf, period, trade_date, tf_days, roll, ema, ema_bar, is_partial_end "
        "from market.ema_multi_tf_u where alignment_source = 'multi_tf' order by 1, 2, 3, 4"
    ).fetchall()
    assert union == incremental["ema_multi_tf"]
    assert conn.execute("select count(*) from market.bars_dirty").fetchone() == (0,)
    assert _build(platform, ("2019-01-01", "2020-03-01"), full_window=True).success
    assert _emas(conn) == incremental
    assert sum(len(v) for v in incremental.values()) > 6_000


def test_d22_out_of_bounds_ema_is_rejected_with_its_bounds_and_still_stored(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    first = date(2023, 1, 1)
    rows = [f"{first + timedelta(days=i)},1000,1001,999,1000,1" for i in range(400)]
    rows += [f"{first + timedelta(days=400 + i)},10,11,9,10,1" for i in range(100)]
    _load(platform, _write(tmp_path / "crash.csv", rows), ("2023-01-01", "2024-05-01"), "CRASH")
    result = _build(platform, ("2023-01-01", "2024-05-01"))
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    bounds = checks[("ema_multi_tf", "ema_within_price_bounds")]
    assert not bounds.passed and bounds.severity == dg.AssetCheckSeverity.WARN
    assert "7D" in bounds.metadata["rows"].value and "window_days" in bounds.metadata["rows"].value
    assert result.success  # a warning: everything downstream still ran
    # 7D, p = 9: a 63-day window of closes at 10 while the slow daily EMA still remembers 1000.
    reject = conn.execute(
        "select value, bounds, source_close from market.ema_rejects where family = 'ema_multi_tf' and tf = '7D' "
        "and period = 9 and violation_type = 'out_of_price_bounds' order by trade_date desc limit 1"
    ).fetchone()
    assert reject[1] == {"min_close": 10.0, "max_close": 10.0, "lower": 5.0, "upper": 20.0, "window_days": 63}
    assert reject[0] > 20.0 and reject[2] == 10.0
    assert (
        conn.execute(
            "select count(*) from market.ema_multi_tf e "
            "join market.ema_rejects r using (asset_id, tf, period, trade_date) "
            "where r.family = 'ema_multi_tf' and r.violation_type = 'out_of_price_bounds'"
        ).fetchone()[0]
        == conn.execute(
            "select count(*) from market.ema_rejects where family = 'ema_multi_tf' and value_column = 'ema'"
        ).fetchone()[0]
    )
    # Bounds come from each row's own window, never from today: the 1000s of 2023 are all within bounds.
    assert conn.execute("select min(trade_date) from market.ema_rejects").fetchone()[0] > date(2024, 2, 4)


def test_nan_ema_fails_the_blocking_check_and_keeps_the_previous_rows(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [f"2024-01-{d:02d},10,11,9,{10 + d / 10},100" for d in range(1, 32)]
    _load(platform, _write(tmp_path / "x.csv", rows), ("2024-01-01", "2024-01-01"), "XTEST")
    assert _build(platform, ("2024-01-01", "2024-01-01")).success
    before = _emas(conn)
    # Implausible inputs quarantine their asset before any EMA is computed (see test_every_check_fails), so an
    # invalid EMA can only come from the computation itself: a kernel fault that yields NaN from 20 January.
    kernel = emas_module.dual_ema

    def faulty(*args, **kwargs) -> pl.DataFrame:
        wide = kernel(*args, **kwargs)
        broken = pl.col("trade_date") >= date(2024, 1, 20)
        return wide.with_columns(pl.when(broken).then(float("nan")).otherwise(pl.col(c)).alias(c) for c in ["ema_9"])

    monkeypatch.setattr(emas_module, "dual_ema", faulty)
    conn.execute("insert into market.bars_dirty values ('ema_multi_tf', 1, '2024-01-20')")
    result = platform.run(
        dg.AssetSelection.assets(EMA_KEYS["ema_multi_tf"]),
        partition_range=("2024-01-01", "2024-01-01"),
        ops={"market__ema_multi_tf": {"skip_stale_check": True}},
        raise_on_error=False,
    )
    assert not result.success
    [valid] = [e for e in result.get_asset_check_evaluations() if e.check_name == "ema_values_valid"]
    assert not valid.passed and valid.metadata["violations"].value > 0
    assert {row["trade_date"] for row in valid.metadata["sample"].value} >= {"2024-01-20"}
    assert _emas(conn) == before
    assert conn.execute("select dirty_from from market.bars_dirty where family = 'ema_multi_tf'").fetchone() == (
        date(2024, 1, 20),
    )
    assert conn.execute(
        "select distinct violation_type from market.ema_rejects where family = 'ema_multi_tf'"
    ).fetchall() == [("nan",)]


def test_d23_stale_assets_wait_and_fresh_ones_build(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    fresh = [f"{today - timedelta(days=40 - i)},10,11,9,10.5,1" for i in range(40)]
    old = [f"{today - timedelta(days=60 - i)},10,11,9,10.5,1" for i in range(40)]  # ends 21 days ago
    months = (f"{(today - timedelta(days=70)):%Y-%m}-01", f"{today:%Y-%m}-01")
    _load(platform, _write(tmp_path / "fresh.csv", fresh), months, "FRESH")
    _load(platform, _write(tmp_path / "old.csv", old), months, "OLD")
    bars = dg.AssetSelection.assets(*BAR_KEYS.values())
    assert platform.run(bars - dg.AssetSelection.checks(FRESHNESS_GATE), partition_range=months).success
    gate = platform.run(dg.AssetSelection.checks(FRESHNESS_GATE), raise_on_error=False)
    [evaluation] = gate.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["stale_symbols"].value == ["OLD"]
    ops = {f"market__{family}": {} for family in EMA_FAMILIES}
    assert platform.run(dg.AssetSelection.assets(*EMA_KEYS.values()), partition_range=months, ops=ops).success
    built = conn.execute(
        "select distinct a.symbol from market.ema_multi_tf e join market.dim_assets a using (asset_id)"
    )
    assert built.fetchall() == [("FRESH",)]
    waiting = conn.execute(
        "select count(*) from market.bars_dirty d join market.dim_assets a using (asset_id) "
        "where a.symbol = 'OLD' and d.family like 'ema%'"
    ).fetchone()
    assert waiting == (len(EMA_FAMILIES),)
    ops = {f"market__{family}": {"skip_stale_check": True} for family in EMA_FAMILIES}
    assert platform.run(dg.AssetSelection.assets(*EMA_KEYS.values()), partition_range=months, ops=ops).success
    assert conn.execute("select count(distinct asset_id) from market.ema_multi_tf").fetchone() == (2,)


def test_a_new_period_rebuilds_the_families_with_it(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    rows = [f"{date(2024, 1, 1) + timedelta(days=i)},10,11,9,{10 + (i % 7) / 10},100" for i in range(120)]
    _load(platform, _write(tmp_path / "x.csv", rows), ("2024-01-01", "2024-04-01"), "XTEST")
    assert _build(platform, ("2024-01-01", "2024-04-01")).success
    conn.execute("insert into market.dim_ema_period (period) values (6), (365)")
    # New periods change the layout of every stored row: a run over one month refuses, one over all does it.
    refused = _build(platform, ("2024-04-01", "2024-04-01"))
    materialized = {e.asset_key for e in refused.get_asset_materialization_events()}
    assert not refused.success and not materialized & set(EMA_KEYS.values())
    assert "must be rebuilt over all months" in str(refused.get_step_failure_events()[0].step_failure_data.error)
    assert _build(platform, ("2019-01-01", "2024-04-01")).success
    periods = conn.execute("select distinct period from market.ema_multi_tf where tf = '1D' order by 1").fetchall()
    assert periods == [(6,), (9,), (10,), (21,), (50,), (100,)]  # 365 needs more than 120 closes
    closes = np.array([10 + (i % 7) / 10 for i in range(120)])
    six = conn.execute("select ema from market.ema_multi_tf where tf = '1D' and period = 6 order by trade_date")
    np.testing.assert_allclose([r[0] for r in six], talib.EMA(closes, timeperiod=6)[5:], rtol=1e-9)


def test_d23_gate_threshold_against_the_newest_bar_close(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    _load(
        platform,
        _write(tmp_path / "x.csv", ["2024-01-01,10,11,9,10,1", "2024-01-02,10,11,9,10,1"]),
        ("2024-01-01",) * 2,
    )
    conn.execute("insert into market.dim_assets (symbol) values ('NOBARS')")
    platform.run(
        dg.AssetSelection.assets(BAR_KEYS["1d"]) - dg.AssetSelection.checks(FRESHNESS_GATE),
        partition_range=("2024-01-01",) * 2,
    )
    closed = datetime(2024, 1, 3, tzinfo=UTC)  # the 2024-01-02 bar of a UTC asset closes at midnight
    with psycopg.connect(platform.settings.database_url) as gate_conn:
        ids = [a for (a,) in gate_conn.execute("select asset_id from market.dim_assets order by 1")]
        assert stale_assets(gate_conn, ids, 48, closed + timedelta(hours=49)) == ids  # 49 h ago: stale
        assert stale_assets(gate_conn, ids, 48, closed + timedelta(hours=47)) == ids[1:]  # no bars: stale


def _files(conn: psycopg.Connection) -> dict[str, int]:
    tables = [*(f"market.{t}" for t in BAR_TABLES.values()), *(f"market.{f}_packed" for f in EMA_FAMILIES)]
    return {table: relation_file(conn, table) for table in tables}


def _rows(conn: psycopg.Connection, table: str) -> list[tuple]:
    return stored_rows(conn, f"market.{table}")


# Not the first partition: that one also owns every earlier date.
_MONTHS = ("2019-02-01", "2019-12-01")


def _built_three_coins(
    platform: Platform, conn: psycopg.Connection, tables: list[str]
) -> tuple[dict[str, list[tuple]], dict[str, int]]:
    """Three coins loaded and every bar and EMA family built over _MONTHS; the rows of `tables` and every
    market table's file."""
    files = [
        {"path": str(SHARED_DATA / "daily" / f"binance_{ticker}_1d.csv"), "symbol": ticker}
        for ticker in ("BTCUSDT", "ETCUSDT", "LTCUSDT")
    ]
    load = {"market__price_histories": {"files": files}}
    platform.run(dg.AssetSelection.assets(PRICE_HISTORIES), partition_range=_MONTHS, ops=load)
    assert _build(platform, _MONTHS).success
    return {t: _rows(conn, t) for t in tables}, _files(conn)


@needs_shared
def test_a_full_rebuild_in_groups_of_assets_truncates_each_table_once_and_writes_the_same_rows(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = [*BAR_TABLES.values(), *(f"{f}_packed" for f in EMA_FAMILIES)]
    before, files = _built_three_coins(platform, conn, tables)
    monkeypatch.setattr(market_assets, "_CHUNK_DAILY_ROWS", 1)  # every asset its own group
    assert _build(platform, _MONTHS, full_window=True).success
    assert {t: _rows(conn, t) for t in tables} == before
    # Each run replaced every row of its table over three groups: it truncated once (a new file), COPYd frozen
    # rows (the visibility map exists before any vacuum) and counted them exactly.
    after = _files(conn)
    for table in files:
        assert after[table] != files[table], table
        assert conn.execute("select pg_relation_size(%s::regclass, 'vm')", (table,)).fetchone()[0] > 0, table
    for name in [*BAR_TABLES.values(), *EMA_FAMILIES]:
        [stored] = conn.execute(sql.SQL("select count(*) from market.{}").format(sql.Identifier(name))).fetchone()
        assert row_counts.table_rows(conn, f"market.{name}") == stored, name


@needs_shared
def test_an_asset_quarantined_in_a_full_rebuild_in_groups_keeps_its_rows_and_the_others_are_rebuilt(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = ["price_bars_multi_tf", "ema_multi_tf_packed"]
    before, files = _built_three_coins(platform, conn, tables)
    [etc] = conn.execute("select asset_id from market.dim_assets where symbol = 'ETCUSDT'").fetchone()
    # A finite but absurd close edited into ETC's daily bars: both families quarantine ETC.
    conn.execute(
        "update market.price_bars_1d set close = 1.7e308, high = 1.7e308 "
        "where asset_id = %s and trade_date = '2019-06-03'",
        (etc,),
    )
    conn.commit()
    monkeypatch.setattr(market_assets, "_CHUNK_DAILY_ROWS", 1)
    keys = [BAR_KEYS["multi_tf"], EMA_KEYS["ema_multi_tf"]]
    result = platform.run(
        dg.AssetSelection.assets(*keys) - TABLE_CHECKS,
        partition_range=_MONTHS,
        ops={"market__ema_multi_tf": {"skip_stale_check": True}},
        rebuild="all",
        raise_on_error=False,
    )
    assert result.success
    quarantined = {
        e.asset_key: e.metadata["quarantined"].value
        for e in result.get_asset_check_evaluations()
        if e.check_name == "no_asset_quarantined"
    }
    assert {key: list(found) for key, found in quarantined.items()} == {key: [f"{etc} (ETCUSDT)"] for key in keys}
    # The whole-table rewrite was abandoned (no new file) and each group was written on its own: ETC's rows
    # are the ones stored before, and the other assets' rows were rebuilt as they were.
    assert {t: _rows(conn, t) for t in tables} == before
    after = _files(conn)
    assert all(after[f"market.{t}"] == files[f"market.{t}"] for t in tables)
    waiting = {f for (f,) in conn.execute("select family from market.bars_dirty where asset_id = %s", (etc,))}
    assert {"multi_tf", "ema_multi_tf"} <= waiting
