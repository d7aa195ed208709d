"""Prices -> daily bars -> multi-day families through Dagster on PostgreSQL: rejects, late data, revisions,
and incremental builds that equal a full rebuild."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import hypothesis
import polars as pl
import psycopg
import pytest
from hypothesis import strategies as st

from trading_assets.config import Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market import assets as market_assets
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.ema_checks import FRESHNESS_GATE
from trading_assets.defs.partitions import CARRY_CHANGED_TAG
from trading_assets.io import market_store, row_counts
from trading_assets.io.ema_store import EMA_FAMILIES
from trading_assets.io.market_store import BAR_TABLES
from trading_assets_tests.conftest import SHARED_DATA, Platform
from trading_assets_tests.fingerprint import relation_file, stored_rows

BARS = list(BAR_KEYS.values())
BTC = SHARED_DATA / "daily" / "binance_BTCUSDT_1d.csv"
needs_shared = pytest.mark.skipif(not BTC.exists(), reason="../shared/data is not beside the project")


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """Partitions from 2019: fewer partition events per full-range run."""
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "2019-01-01")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(Settings.from_env(), instance)


def _load(platform: Platform, files: list[dict], months: tuple[str, str]) -> dg.ExecuteInProcessResult:
    return platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=months,
        ops={"market__price_histories": {"files": files}},
    )


def _bars(platform: Platform, months: tuple[str, str], full_window: bool = False) -> dg.ExecuteInProcessResult:
    return platform.run(
        dg.AssetSelection.assets(*BARS) - TABLE_CHECKS,
        partition_range=months,
        rebuild="all" if full_window else "changed",
    )


def _snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {table: stored_rows(conn, f"market.{table}") for table in BAR_TABLES.values()}


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("date,open,high,low,close,volume\n" + "".join(r + "\n" for r in rows))
    return path


def _btc_rows(first: str, last: str) -> list[str]:
    frame = pl.read_csv(BTC).filter(pl.col("timestamp").is_between(pl.lit(first), pl.lit(last)))
    return [",".join(str(v) for v in row) for row in frame.iter_rows()]


def test_bad_rows_are_rejected_with_line_and_reason_and_good_rows_load(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    prices = _write(
        tmp_path / "x.csv",
        [
            "2024-01-02,10,11,9,10.5,100",
            "2024-01-03,10,11,9,nan,100",
            "2024-01-04,-1,11,9,10,100",
            "2024-01-05,10,11,9",
            "2024-01-06,10,9.5,9,10.5,100",  # high below close: loads, repaired in the daily bars
            "2024-01-06,10,11,9,10.5,100",
            "2024-01-07,10,11,9,10.5,-5",
            "2024-01-08,10,11,9,10.5,",
        ],
    )
    result = _load(platform, [{"path": str(prices), "symbol": "XTEST"}], ("2024-01-01", "2024-01-01"))
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["run_rows"].value, metadata["run_rejects"].value) == (3, 5)
    rejects = conn.execute(
        "select source_line, reason from market.price_rejects where stage = 'load' order by source_line"
    ).fetchall()
    assert rejects == [
        (3, "price missing, not finite or not positive"),
        (4, "price missing, not finite or not positive"),
        (5, "expected 6 fields, found 4"),
        (
            7,
            "trade_date 2024-01-06 again with other values: line 6 has 10.0/9.5/9.0/10.5/100.0, this line "
            "10.0/11.0/9.0/10.5/100.0 (open/high/low/close/volume); the first is kept",
        ),
        (8, "volume negative or not finite"),
    ]
    _bars(platform, ("2024-01-01", "2024-01-01"))
    daily = conn.execute(
        "select trade_date::text, high, low, volume, repaired_high, bar_seq from market.price_bars_1d order by 1"
    ).fetchall()
    assert daily == [
        ("2024-01-02", 11.0, 9.0, 100.0, False, 1),
        ("2024-01-06", 10.5, 9.0, 100.0, True, 2),
        ("2024-01-08", 11.0, 9.0, None, False, 3),
    ]
    assert conn.execute("select reason, high from market.price_rejects where stage = 'bars_1d'").fetchall() == [
        ("high below max(open, close); repaired", 9.5)
    ]
    # Loading the same file again neither duplicates rejects nor revises anything.
    again = _load(platform, [{"path": str(prices), "symbol": "XTEST"}], ("2024-01-01", "2024-01-01"))
    metadata = again.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["run_inserted"].value, metadata["run_revised"].value, metadata["run_unchanged"].value) == (0, 0, 3)
    assert conn.execute("select count(*) from market.price_rejects").fetchone()[0] == 6


def test_a_file_with_a_crossed_row_fails_the_blocking_check_and_stops_the_bars(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    crossed = _write(tmp_path / "x.csv", ["2024-01-02,10,11,9,10.5,100", "2024-01-03,10,8,12,10.5,100"])
    month = ("2024-01-01", "2024-01-01")
    daily = dg.AssetSelection.assets(PRICE_HISTORIES, BAR_KEYS["1d"]) - TABLE_CHECKS
    files = {"market__price_histories": {"files": [{"path": str(crossed), "symbol": "XTEST"}]}}
    result = platform.run(daily, partition_range=month, ops=files, raise_on_error=False)
    assert not result.success
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "prices_not_crossed"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["crossed_rows"].value == 1
    assert f"| {crossed} | 3 | 2024-01-03 | 8.0 | 12.0 |" in check.metadata["rows"].value
    # The file's rows are kept as loaded; nothing downstream of them was built.
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [PRICE_HISTORIES]
    assert conn.execute("select count(*) from market.price_bars_1d").fetchone() == (0,)

    # The corrected file passes the gate and the bars follow in the same run.
    _write(crossed, ["2024-01-02,10,11,9,10.5,100", "2024-01-03,10,11,9,10.5,100"])
    assert platform.run(daily, partition_range=month, ops=files).success
    assert conn.execute("select high, low from market.price_bars_1d where trade_date = '2024-01-03'").fetchone() == (
        11.0,
        9.0,
    )


@needs_shared
def test_day_by_day_build_equals_full_rebuild_on_real_data(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    history = _write(tmp_path / "history.csv", _btc_rows("2019-11-01", "2020-02-27"))
    _load(platform, [{"path": str(history), "symbol": "BTCUSDT"}], ("2019-01-01", "2020-02-01"))
    _bars(platform, ("2019-11-01", "2020-02-01"))
    for day_row in _btc_rows("2020-02-28", "2020-03-03"):
        day_file = _write(tmp_path / f"{day_row[:10]}.csv", [day_row])
        month = day_row[:7] + "-01"
        _load(platform, [{"path": str(day_file), "symbol": "BTCUSDT"}], (month, month))
        _bars(platform, (month, month))
    incremental = _snapshot(conn)
    assert len(incremental["price_bars_1d"]) == 124
    # With the table-wide checks this time (an asset selection takes every check of its assets).
    with_checks = dg.AssetSelection.assets(*BARS) - dg.AssetSelection.checks(FRESHNESS_GATE)
    warnings = {
        (e.asset_key.path[-1], e.check_name): e
        for e in platform.run(with_checks, partition_range=("2020-03-01", "2020-03-01")).get_asset_check_evaluations()
    }
    # ... and no_asset_quarantined of the five multi-day families.
    assert len(warnings) == 4 * 6 + 2 + 5 * 2 + 6 + 5 and all(e.passed for e in warnings.values())
    # The bars consumed their marks; the EMAs' wait for the EMA assets.
    marks = conn.execute("select family, count(*) from market.bars_dirty group by 1 order by 1").fetchall()
    assert marks == [(family, 1) for family in sorted(EMA_FAMILIES)]

    _bars(platform, ("2019-01-01", "2020-03-01"), full_window=True)
    assert _snapshot(conn) == incremental
    counts = dict(conn.execute("select alignment_source, count(*) from market.price_bars_multi_tf_u group by 1"))
    assert counts["multi_tf"] == 124 * 5

    # A timeframe added by a user is reported missing until the bars are rebuilt, then built without code.
    conn.execute("insert into market.dim_timeframe (family, tf) values ('multi_tf', '2D')")
    coverage = dg.AssetCheckKey(BAR_KEYS["multi_tf"], "coverage")
    [before] = platform.run(dg.AssetSelection.checks(coverage)).get_asset_check_evaluations()
    assert not before.passed and before.metadata["missing"].value == 1
    _bars(platform, ("2019-01-01", "2020-03-01"), full_window=True)
    [after] = platform.run(dg.AssetSelection.checks(coverage)).get_asset_check_evaluations()
    assert after.passed
    assert conn.execute(
        "select count(*), count(*) filter (where not is_partial_end) from market.price_bars_multi_tf where tf = '2D'"
    ).fetchone() == (124, 62)


@needs_shared
def test_rebuilding_asset_by_asset_in_chunks_gives_the_same_rows(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [
        {"path": str(SHARED_DATA / "daily" / f"binance_{ticker}_1d.csv"), "symbol": ticker}
        for ticker in ("BTCUSDT", "ETCUSDT", "LTCUSDT")
    ]
    months = ("2019-02-01", "2019-12-01")  # not the first partition: that one also owns every earlier date
    _load(platform, files, months)
    _bars(platform, months)
    together = _snapshot(conn)
    daily = relation_file(conn, "market.price_bars_1d")
    monkeypatch.setattr(market_assets, "_CHUNK_DAILY_ROWS", 1)  # every asset its own chunk
    rebuilt = _bars(platform, months, full_window=True)
    assert _snapshot(conn) == together
    # The daily bars' run replaced every row over its three chunks: it truncated once (a new file) and COPYd
    # frozen rows (the visibility map exists before any vacuum), and its row counts are exact.
    assert relation_file(conn, "market.price_bars_1d") != daily
    assert conn.execute("select pg_relation_size('market.price_bars_1d'::regclass, 'vm')").fetchone()[0] > 0
    assert row_counts.table_rows(conn, "market.price_bars_1d") == len(together["price_bars_1d"])
    metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in rebuilt.get_asset_materialization_events()}
    assert metadata["price_bars_1d"]["run_rows_written"].value == len(together["price_bars_1d"]) == 3 * 334
    assert metadata["price_bars_multi_tf"]["run_rows_written"].value == len(together["price_bars_multi_tf"])
    assert metadata["price_bars_multi_tf"]["last_date"].value == "2019-12-31"


@needs_shared
def test_late_interior_day_and_old_revision_reach_every_later_row(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    rows = _btc_rows("2020-01-01", "2020-02-29")
    late = next(r for r in rows if r.startswith("2020-01-12"))
    _load(
        platform,
        [{"path": str(_write(tmp_path / "gap.csv", [r for r in rows if r != late])), "symbol": "BTCUSDT"}],
        ("2020-01-01", "2020-02-01"),
    )
    _bars(platform, ("2020-01-01", "2020-02-01"))
    assert conn.execute("select max(bar_seq) from market.price_bars_1d").fetchone()[0] == 59

    # The missing day arrives late, and an older close is revised.
    revised = late.replace("2020-01-12", "2020-01-05").split(",")
    revised_row = ",".join([*revised[:4], "7777.0", revised[5]])
    _load(
        platform,
        [{"path": str(_write(tmp_path / "late.csv", [late, revised_row])), "symbol": "BTCUSDT"}],
        ("2020-01-01", "2020-01-01"),
    )
    before = _snapshot(conn)
    january = _bars(platform, ("2020-01-01", "2020-01-01"))
    # A run over January writes January only; the rows after it continue from a changed state, so the run
    # queues them again from February and says so with its tag (automation then runs February).
    after = _snapshot(conn)
    for table, rows in after.items():
        assert [r for r in rows if r[3] >= date(2020, 2, 1)] == [r for r in before[table] if r[3] >= date(2020, 2, 1)]
    assert platform.instance.get_run_by_id(january.run_id).tags[CARRY_CHANGED_TAG] == "true"
    requeued = conn.execute(
        "select family, dirty_from from market.bars_dirty where family = any(%s)", (list(BAR_TABLES),)
    )
    assert dict(requeued.fetchall()) == dict.fromkeys(BAR_TABLES, date(2020, 2, 1))
    assert {e.partition for e in january.get_asset_materialization_events()} == {"2020-01-01"}

    _bars(platform, ("2020-02-01", "2020-02-01"))
    incremental = _snapshot(conn)
    seqs = [row[2] for row in incremental["price_bars_1d"]]
    assert seqs == list(range(1, 61))
    assert conn.execute(
        "select close from market.price_bars_multi_tf where tf = '7D' and trade_date = '2020-01-05'"
    ).fetchone() == (7777.0,)
    _bars(platform, ("2019-01-01", "2020-02-01"), full_window=True)
    assert _snapshot(conn) == incremental


def test_rerunning_a_partition_gives_identical_rows(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    prices = _write(tmp_path / "x.csv", [f"2024-01-{d:02d},10,11,9,{10 + d / 10},100" for d in range(1, 32)])
    _load(platform, [{"path": str(prices), "symbol": "XTEST"}], ("2024-01-01", "2024-01-01"))
    _bars(platform, ("2024-01-01", "2024-01-01"))
    first = _snapshot(conn)
    _bars(platform, ("2024-01-01", "2024-01-01"), full_window=True)
    assert _snapshot(conn) == first
    assert len(first["price_bars_multi_tf_cal_anchor_iso"]) == 31 * 6


def _indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        "select indexname, indexdef from pg_indexes where schemaname = 'market' order by indexname"
    ).fetchall()


def test_a_full_rewrite_builds_the_indexes_after_its_copy_and_a_failed_one_keeps_them(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = _write(tmp_path / "x.csv", [f"2024-01-{d:02d},10,11,9,{10 + d / 10},100" for d in range(1, 32)])
    _load(platform, [{"path": str(prices), "symbol": "XTEST"}], ("2024-01-01", "2024-01-01"))
    declared = _indexes(conn)
    built = []
    real = market_store.indexes_built_after
    monkeypatch.setattr(market_store, "indexes_built_after", lambda c, table: built.append(table) or real(c, table))
    _bars(platform, ("2024-01-01", "2024-01-01"))
    first = _snapshot(conn)
    # The first build of a table and every full rewrite take the path; the indexes are the declared ones after.
    assert sorted(built) == sorted(f"market.{t}" for t in BAR_TABLES.values())
    _bars(platform, ("2024-01-01", "2024-01-01"), full_window=True)
    assert len(built) == 2 * len(BAR_TABLES)
    assert _indexes(conn) == declared and _snapshot(conn) == first

    def fail_after_copying(*args, **kwargs) -> None:
        real_copy(*args, **kwargs)
        raise RuntimeError("the server went away after the COPY")

    real_copy = market_store.copy_frames
    monkeypatch.setattr(market_store, "copy_frames", fail_after_copying)
    failed = platform.run(
        dg.AssetSelection.assets(BAR_KEYS["multi_tf"]) - TABLE_CHECKS,
        partition_range=("2024-01-01", "2024-01-01"),
        rebuild="all",
        raise_on_error=False,
    )
    assert not failed.success
    assert _indexes(conn) == declared and _snapshot(conn) == first
    with pytest.raises(psycopg.errors.UniqueViolation):  # the primary key is back and enforced
        conn.execute("insert into market.price_bars_multi_tf select * from market.price_bars_multi_tf limit 1")


def test_a_rewrite_of_every_row_truncates_and_freezes_and_one_that_misses_a_row_deletes(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    prices = _write(tmp_path / "x.csv", [f"2024-01-{d:02d},10,11,9,{10 + d / 10},100" for d in range(1, 32)])
    _load(platform, [{"path": str(prices), "symbol": "XTEST"}], ("2024-01-01", "2024-01-01"))
    table = "market.price_bars_multi_tf"
    empty = relation_file(conn, table)
    _bars(platform, ("2024-01-01", "2024-01-01"))
    first = _snapshot(conn)
    # A first build and a full rewrite truncate (a new file) and COPY frozen rows: their pages are marked
    # all-visible as they are written, so the visibility map exists before any vacuum.
    assert relation_file(conn, table) != empty
    assert conn.execute("select pg_relation_size(%s::regclass, 'vm')", (table,)).fetchone()[0] > 0
    built = relation_file(conn, table)
    _bars(platform, ("2024-01-01", "2024-01-01"), full_window=True)
    rewritten = relation_file(conn, table)
    assert rewritten != built and _snapshot(conn) == first
    # Rows the run does not rebuild (of an asset without prices, written by SQL) are not replaced: the rewrite
    # deletes instead, and they stay.
    other = conn.execute("insert into market.dim_assets (symbol) values ('YTEST') returning asset_id").fetchone()[0]
    conn.execute("create temp table outside as select * from market.price_bars_multi_tf")
    conn.execute("update outside set asset_id = %s", (other,))
    conn.execute("insert into market.price_bars_multi_tf select * from outside")
    _bars(platform, ("2024-01-01", "2024-01-01"), full_window=True)
    assert relation_file(conn, table) == rewritten
    kept = conn.execute("select count(*) from market.price_bars_multi_tf where asset_id = %s", (other,)).fetchone()
    assert kept == (len(first["price_bars_multi_tf"]),)
    conn.execute("delete from market.price_bars_multi_tf where asset_id = %s", (other,))
    assert _snapshot(conn) == first


@pytest.mark.parametrize(
    ("stored", "starts", "whole"),
    [
        ([], [], True),
        ([(1, "7D", 1), (1, "7D", 5), (1, "14D", 3), (2, "7D", 2)], [(1, "7D", 1), (1, "14D", 3), (2, "7D", 1)], True),
        # a key the rewrite does not name: first, in the middle, last
        ([(1, "7D", 1), (2, "7D", 1), (3, "7D", 1)], [(2, "7D", 1), (3, "7D", 1)], False),
        ([(1, "7D", 1), (2, "7D", 1), (3, "7D", 1)], [(1, "7D", 1), (3, "7D", 1)], False),
        ([(1, "7D", 1), (2, "7D", 1), (3, "7D", 1)], [(1, "7D", 1), (2, "7D", 1)], False),
        ([(1, "7D", 1), (1, "14D", 1)], [(1, "7D", 1), (1, "1D", 1)], False),
        # a timeframe not named whose rows all lie after the asset's from_dates
        ([(1, "7D", 1), (1, "7D", 5), (1, "14D", 5)], [(1, "7D", 1)], False),
        # an asset's timeframes starting on different days: rows before the latest are covered by their own
        ([(1, "7D", 1), (1, "14D", 3), (1, "14D", 4)], [(1, "7D", 1), (1, "14D", 3)], True),
        ([(1, "7D", 1), (1, "7D", 2), (1, "14D", 3)], [(1, "7D", 2), (1, "14D", 1)], False),
        # a row before its key's from_date, and one on the end date
        ([(1, "7D", 1), (1, "7D", 2), (2, "7D", 1)], [(1, "7D", 2), (2, "7D", 1)], False),
        ([(1, "7D", 1), (2, "7D", 1), (2, "7D", 20)], [(1, "7D", 1), (2, "7D", 1)], False),
    ],
)
def test_a_rewrite_replaces_every_row_only_when_each_stored_key_is_covered_from_its_first_to_its_last_row(
    conn: psycopg.Connection,
    stored: list[tuple[int, str, int]],
    starts: list[tuple[int, str, int]],
    whole: bool,
) -> None:
    conn.execute(
        "create temp table keyed (asset_id int, tf text, trade_date date, primary key (asset_id, trade_date, tf))"
    )
    conn.execute(f"create temp table starts {market_store.TF_STARTS}")
    with conn.cursor() as cur:
        cur.executemany("insert into keyed values (%s, %s, '2024-01-01'::date + %s)", stored)
        cur.executemany("insert into starts values (%s, %s, '2024-01-01'::date + %s)", starts)
    table = psycopg.sql.SQL("keyed")
    assert market_store._replaces_every_row(conn, table, "starts", date(2024, 1, 20)) is whole
    conn.rollback()


@pytest.mark.parametrize(
    ("stored", "starts", "whole"),
    [
        ([1, 5, 20], [1], False),
        ([1, 5, 18], [1], True),
        ([2, 5], [1], True),
        ([1, 5], [2], False),
    ],
)
def test_the_daily_bars_are_walked_by_asset_alone(
    conn: psycopg.Connection, stored: list[int], starts: list[int], whole: bool
) -> None:
    # Keyed as market.price_bars_1d: (asset_id, trade_date), tf always 1D. Assets 1 and 3 hold `stored` days,
    # asset 2 one day; the rewrite names all three from the days of `starts`.
    conn.execute(
        "create temp table daily (asset_id int, tf text not null default '1D', trade_date date, "
        "primary key (asset_id, trade_date))"
    )
    conn.execute(f"create temp table starts {market_store.TF_STARTS}")
    with conn.cursor() as cur:
        rows = [(asset, day) for asset in (1, 3) for day in stored] + [(2, 3)]
        cur.executemany("insert into daily (asset_id, trade_date) values (%s, '2024-01-01'::date + %s)", rows)
        firsts = [(asset, day) for asset in (1, 3) for day in starts] + [(2, 3)]
        cur.executemany("insert into starts values (%s, '1D', '2024-01-01'::date + %s)", firsts)
    assert market_store._replaces_every_row(conn, psycopg.sql.SQL("daily"), "starts", date(2024, 1, 20)) is whole
    conn.rollback()


@pytest.mark.parametrize(
    "key", ["asset_id, trade_date, tf", "asset_id, trade_date"], ids=["multi-day bars", "daily bars"]
)
def test_the_key_walk_follows_the_primary_key_without_sorting(conn: psycopg.Connection, key: str) -> None:
    # A walk ordered by a column its key lacks (tf, of the daily bars) sorted every asset's rows at each step.
    conn.execute(f"create temp table keyed (asset_id int, tf text, trade_date date, primary key ({key}))")
    conn.execute(f"create temp table starts {market_store.TF_STARTS}")
    for setting in ("enable_seqscan", "enable_sort", "enable_incremental_sort"):
        conn.execute(psycopg.sql.SQL("set local {} = off").format(psycopg.sql.Identifier(setting)))
    walk = market_store._key_walk(conn, psycopg.sql.SQL("keyed"), "starts", date(2024, 1, 20))
    plan = "\n".join(line for (line,) in conn.execute(psycopg.sql.SQL("explain ") + walk))
    assert "Sort" not in plan and "Index" in plan
    conn.rollback()


@hypothesis.settings(
    max_examples=60, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
@hypothesis.given(
    stored=st.sets(st.tuples(st.integers(1, 3), st.sampled_from(["14D", "30D", "7D"]), st.integers(0, 9)), max_size=40),
    starts=st.dictionaries(
        st.tuples(st.integers(1, 4), st.sampled_from(["14D", "30D", "7D", "90D"])), st.integers(0, 11), max_size=12
    ),
    end=st.integers(0, 11),
)
def test_the_last_row_before_a_date_is_each_keys_own_whatever_its_assets_other_timeframes_hold(
    conn: psycopg.Connection, stored: set[tuple[int, str, int]], starts: dict[tuple[int, str], int], end: int
) -> None:
    # Timeframes of one asset end on different days, keys start on different days or have no rows, and some
    # timeframes are stored but not asked for: each key gets its own last row before its date (or none).
    first = date(2024, 1, 1)
    with conn.transaction(force_rollback=True):
        conn.execute(
            "create temp table keyed (asset_id int, tf text, trade_date date, n int, "
            "primary key (asset_id, trade_date, tf)) on commit drop"
        )
        conn.execute(f"create temp table keys {market_store.TF_STARTS} on commit drop")
        with conn.cursor() as cur:
            rows = [(asset, tf, first + timedelta(days=day), 100 * asset + day) for asset, tf, day in stored]
            cur.executemany("insert into keyed values (%s, %s, %s, %s)", rows)
            keys = [(asset, tf, first + timedelta(days=day)) for (asset, tf), day in starts.items()]
            cur.executemany("insert into keys values (%s, %s, %s)", keys)
        for before, bound in (
            (psycopg.sql.SQL("r.from_date"), dict(zip(starts, [k[2] for k in keys], strict=True))),
            (psycopg.sql.Literal(first + timedelta(days=end)), dict.fromkeys(starts, first + timedelta(days=end))),
        ):
            query = market_store.last_rows_before(psycopg.sql.SQL("keyed"), "keys", before, ["trade_date", "n"])
            found = conn.execute(query).fetchall()
            expected = []
            for (asset, tf), day in bound.items():
                earlier = [row for row in rows if row[:2] == (asset, tf) and row[2] < day]
                if earlier:
                    expected.append(max(earlier, key=lambda row: row[2]))
            assert sorted(found) == sorted(expected)


def test_d4_backfill_at_series_start_renumbers_without_duplicates(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    rows = [f"2024-01-{d:02d},10,11,9,{10 + d / 10},100" for d in range(1, 21)]
    _load(
        platform,
        [{"path": str(_write(tmp_path / "late.csv", rows[9:])), "symbol": "XTEST"}],
        ("2024-01-01", "2024-01-01"),
    )
    _bars(platform, ("2024-01-01", "2024-01-01"))
    assert conn.execute("select min(bar_seq), min(trade_date)::text from market.price_bars_1d").fetchone() == (
        1,
        "2024-01-10",
    )
    _load(
        platform,
        [{"path": str(_write(tmp_path / "early.csv", rows[:9])), "symbol": "XTEST"}],
        ("2024-01-01", "2024-01-01"),
    )
    _bars(platform, ("2024-01-01", "2024-01-01"))
    assert conn.execute("select bar_seq from market.price_bars_1d where trade_date = '2024-01-10'").fetchone() == (10,)
    assert conn.execute(
        "select count(*), count(distinct trade_date) from market.price_bars_multi_tf where tf = '7D'"
    ).fetchone() == (20, 20)
    incremental = _snapshot(conn)
    _bars(platform, ("2019-01-01", "2024-01-01"), full_window=True)
    assert _snapshot(conn) == incremental


@needs_shared
def test_bad_print_in_lean_goog_is_reported(platform: Platform, conn: psycopg.Connection) -> None:
    goog = SHARED_DATA / "daily" / "lean_equity_usa_goog_1d.csv"
    spec = {
        "path": str(goog),
        "symbol": "GOOG",
        "price_divisor": 10000.0,
        "calendar": "XNYS",
        "timezone": "America/New_York",
    }
    _load(platform, [spec], ("2019-01-01", "2026-11-01"))  # the first partition holds 2004-2018 too
    # The source's stamp is kept as an instant: midnight in New York, 04:00 UTC in summer, 05:00 in winter.
    stamps = conn.execute(
        "select trade_date::text, ts from market.price_histories where trade_date in ('2008-09-30', '2008-12-01') "
        "order by trade_date"
    ).fetchall()
    assert stamps == [
        ("2008-09-30", datetime(2008, 9, 30, 4, tzinfo=UTC)),
        ("2008-12-01", datetime(2008, 12, 1, 5, tzinfo=UTC)),
    ]
    result = platform.run(
        dg.AssetSelection.assets(BAR_KEYS["1d"]) - dg.AssetSelection.checks(FRESHNESS_GATE),
        partition_range=("2019-01-01", "2019-01-01"),
    )  # with the table-wide checks of the daily bars
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["ohlc_consistent"].passed and checks["not_newer_than_prices"].passed
    outliers = checks["price_outliers"]
    assert not outliers.passed and outliers.severity == dg.AssetCheckSeverity.WARN
    assert outliers.metadata["outliers"].value == 2
    assert "2008-09-30" in outliers.metadata["rows"].value


def test_d1_five_clean_days_make_five_daily_bars(platform: Platform, conn: psycopg.Connection, tmp_path: Path) -> None:
    prices = _write(tmp_path / "x.csv", [f"2024-03-{d:02d},10,11,9,10.5,100" for d in range(4, 9)])
    spec = {"path": str(prices), "symbol": "XNY", "timezone": "America/New_York"}
    _load(platform, [spec], ("2024-03-01", "2024-03-01"))
    _bars(platform, ("2024-03-01", "2024-03-01"))
    rows = conn.execute(
        "select tf, bar_seq, tf_days, pos_in_bar, count_days, count_days_remaining, is_partial_start, "
        "is_partial_end, is_missing_days, count_missing_days, time_open_bar, time_close_bar - time_open_bar "
        "from market.price_bars_1d order by trade_date"
    ).fetchall()
    assert [r[:10] for r in rows] == [("1D", i, 1, 1, 1, 0, False, False, False, 0) for i in range(1, 6)]
    # Each bar is its trading day in New York, half-open: [local midnight, next local midnight) in UTC.
    assert [r[10].isoformat() for r in rows] == [f"2024-03-{d:02d}T05:00:00+00:00" for d in range(4, 9)]
    assert {r[11].total_seconds() for r in rows} == {86400.0}
