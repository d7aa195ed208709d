"""What the Dagster UI says is what the tables hold: the declared lineage, runs that write only inside their
partitions, automation that rebuilds exactly what a change affects, and no materialization without a write."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
from dagster._core.definitions.partitions.mapping import SpecificPartitionsPartitionMapping

from trading_assets.config import Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.dimensions import DIM_ASSETS, DIM_EMA_PERIOD, DIM_TIMEFRAME
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.market.row_count_checks import ROW_COUNT_CHECKS
from trading_assets.io.ema_store import EMA_FAMILIES
from trading_assets.io.market_store import BAR_TABLES
from trading_assets_tests.conftest import SHARED_DATA, Platform

BTC = SHARED_DATA / "daily" / "binance_BTCUSDT_1d.csv"
needs_shared = pytest.mark.skipif(not BTC.exists(), reason="../shared/data is not beside the project")
BARS = dg.AssetSelection.assets(*BAR_KEYS.values())
EMAS = dg.AssetSelection.assets(*EMA_KEYS.values())
MARKET = (BARS | EMAS) - TABLE_CHECKS  # as the refresh jobs run them
DIMENSIONS = dg.AssetSelection.assets(DIM_ASSETS, DIM_TIMEFRAME, DIM_EMA_PERIOD)
EMA_OPS = {f"market__{family}": {"skip_stale_check": True} for family in EMA_FAMILIES}


FIRST_MONTH = "2024-01-01"


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """Partitions from 2024: a run over every month records three years of them."""
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", FIRST_MONTH)
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(Settings.from_env(), instance)


def _graph_table(defs: dg.Definitions) -> dict[str, tuple]:
    """Per asset: its parents (with the mapping of a time-partitioned parent), partitioning, freshness and
    checks: the map a user reads in the UI."""
    graph = defs.resolve_asset_graph()
    table = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        parents = []
        for parent in sorted(node.parent_keys):
            mapping = graph.get_partition_mapping(key, parent)
            if isinstance(mapping, dg.TimeWindowPartitionMapping):
                how = "own earlier months" if parent == key else "months up to it"
            elif isinstance(mapping, SpecificPartitionsPartitionMapping):
                how = f"[{', '.join(mapping.partition_keys)}]"
            else:
                how = ""
            parents.append(f"{parent.to_user_string()}{' ' + how if how else ''}")
        partitions = type(node.partitions_def).__name__ if node.partitions_def else ""
        freshness = type(node.freshness_policy).__name__ if node.freshness_policy else ""
        checks = sorted(c.name for c in graph.get_check_keys_for_assets({key}))
        table[key.to_user_string()] = (parents, partitions, freshness, checks)
    return table


MONTHLY, STATIC = "MonthlyPartitionsDefinition", "StaticPartitionsDefinition"
CRON, WINDOW = "CronFreshnessPolicy", "TimeWindowFreshnessPolicy"
BAR_CHECKS = [
    "changes_applied", "not_newer_than_prices", "ohlc_consistent", "one_canonical_row_per_bar", "row_counts_exact"
]  # fmt: skip
FAMILY_CHECKS = sorted([*BAR_CHECKS, "canonical_spacing", "coverage", "no_asset_quarantined"])
EMA_CHECKS = [
    "bars_fresh", "canonical_spacing", "changes_applied", "coverage", "ema_values_valid", "ema_within_price_bounds",
    "no_asset_quarantined", "no_rows_before_seed", "row_counts_exact",
]  # fmt: skip


def _family(table: str, timeframes: str) -> tuple:
    return (
        [
            "market/dim_assets",
            f"market/dim_timeframe [{timeframes}]",
            "market/price_bars_1d months up to it",
            f"market/{table} own earlier months",
        ],
        MONTHLY,
        CRON,
        FAMILY_CHECKS,
    )


def _emas(family: str, bars: str | None, timeframes: str) -> tuple:
    parents = [
        "market/dim_ema_period",
        f"market/dim_timeframe [{timeframes}]",
        f"market/{family} own earlier months",
        "market/price_bars_1d months up to it",
    ]
    if bars:
        parents.append(f"market/{bars} months up to it")
    return (sorted(parents), MONTHLY, CRON, EMA_CHECKS)


EXPECTED_GRAPH = {
    "catalog/exchanges": ([], "", "", []),
    "catalog/exchanges.parquet": (["catalog/exchanges"], "", "", []),
    "catalog/symbols": (
        ["catalog/exchanges"],
        "",
        "",
        sorted(
            [
                "bounds_in_utc",
                "listing_complete",
                "one_current_version",
                "versions_contiguous",
                "crypto_in_utc",
                "timezone_present",
                "timezone_matches_exchange",
                "structural_fields_present",
            ]
        ),
    ),
    "catalog/symbols.parquet": (["catalog/symbols"], "", "", []),
    "catalog/lean_map_files": ([], "", "", []),
    "catalog/ticker_history": (["catalog/lean_map_files"], "", "", ["tickers_one_per_day"]),
    "market/lean_factor_files": ([], "", "", []),
    "market/corporate_actions": (["market/lean_factor_files"], "", "", ["factor_dates_ordered", "factors_positive"]),
    "market/price_bars_1d_adjusted": (
        ["catalog/ticker_history", "market/corporate_actions", "market/dim_assets", "market/price_bars_1d"],
        "",
        "",
        ["splits_match_price_jumps", "unexplained_price_jumps"],
    ),
    "stage1/spool_files": ([], "", "", []),
    "trading/macro_signals": (
        ["core_energy/fact_series_value months up to it"],
        MONTHLY,
        WINDOW,
        ["macro_slopes_match_yields", "macro_values_known_when_used"],
    ),
    "ops/retention": (
        sorted(
            f"trading/{t}"
            for t in (
                "macro_signals",
                "ml_features",
                "multi_resolution_bars",
                "option_chain_snapshots",
                "trade_history",
                "vix_term_structure",
            )
        ),
        "",
        "",
        ["archives_verified", "permanent_tables_intact", "retention_respected"],
    ),
    "ops/table_sizes": ([], "", "", ["database_size_thresholds"]),
    "ops/backup": ([], "", "", ["backup_recent"]),
    "ops/capacity_report": (["ops/table_sizes"], "", "", []),
    "ops/compression_report": (["ops/retention"], "", "", []),
    "ops/reindex": ([], "", "", []),
    "ops/vacuum_analyze": ([], "", "", []),
    "ops/restore_test": (["ops/backup"], "", "", ["restore_test_passed"]),
    "trading/intraday_files": ([], "", "", []),
    "trading/multi_resolution_bars": (
        ["trading/intraday_files"],
        MONTHLY,
        WINDOW,
        ["bars_ohlc_ordered", "bars_within_session", "intraday_files_caught_up"],
    ),
    "trading/ml_features": (["trading/option_chain_snapshots months up to it"], MONTHLY, WINDOW, ["features_complete"]),
    "trading/option_chain_snapshots": (
        ["trading/option_files"],
        MONTHLY,
        WINDOW,
        ["chain_fresh_in_session", "chain_quotes_valid", "strikes_on_grid"],
    ),
    "trading/option_files": ([], "", "", []),
    "trading/trade_files": ([], "", "", []),
    "trading/trade_history": (
        ["trading/trade_files"],
        MONTHLY,
        WINDOW,
        ["trade_files_recorded", "trades_never_deleted"],
    ),
    "trading/vix_files": ([], "", "", []),
    "trading/vix_term_structure": (["trading/vix_files"], MONTHLY, WINDOW, ["vix_curve_sane", "vix_front_not_expired"]),
    "stage1/spool_replay": (
        ["stage1/spool_files"],
        "",
        "",
        sorted(
            [
                "spool_nothing_waiting",
                "spool_waiting_not_growing",
                "run_folds_match_summary",
                "runs_reference_measured_datasets",
                "legacy_datasets_have_master_rows",
            ]
        ),
    ),
    "core_energy/dim_series": ([], "", "", ["model_col_valid"]),  # observed: edited with SQL
    "core_energy/dim_series_backup": (["core_energy/dim_series"], "", CRON, []),
    "core_energy/fact_series_value": (
        ["core_energy/dim_series"],
        MONTHLY,
        WINDOW,
        ["every_series_observed", "series_fresh"],
    ),
    "core_energy/map_model_series": (["core_energy/dim_series"], "", CRON, ["dim_map_mismatch"]),
    "core_energy/v_series_wide": (
        ["core_energy/fact_series_value", "core_energy/map_model_series", "core_energy/wide_view_followers"],
        "",
        CRON,
        ["view_columns_match"],
    ),
    "core_energy/wide_view_followers": ([], "", "", []),
    "market/dim_assets": ([], "", "", []),
    "market/dim_ema_period": ([], "", "", []),
    "market/dim_timeframe": ([], STATIC, "", []),
    "market/ema_multi_tf": _emas("ema_multi_tf", "price_bars_multi_tf", "multi_tf"),
    "market/ema_multi_tf_cal_anchor_iso": _emas(
        "ema_multi_tf_cal_anchor_iso", "price_bars_multi_tf_cal_anchor_iso", "cal_anchor_iso"
    ),
    "market/ema_multi_tf_cal_anchor_us": _emas(
        "ema_multi_tf_cal_anchor_us", "price_bars_multi_tf_cal_anchor_us", "cal_anchor_us"
    ),
    "market/ema_multi_tf_cal_iso": _emas("ema_multi_tf_cal_iso", "price_bars_multi_tf_cal_iso", "cal_iso"),
    "market/ema_multi_tf_cal_us": _emas("ema_multi_tf_cal_us", "price_bars_multi_tf_cal_us", "cal_us"),
    "market/ema_multi_tf_v2": _emas("ema_multi_tf_v2", None, "multi_tf"),
    "market/price_bars_1d": (
        ["market/dim_assets", "market/price_bars_1d own earlier months", "market/price_histories months up to it"],
        MONTHLY,
        CRON,
        sorted([*BAR_CHECKS, "fresh_for_emas", "gaps_against_calendar", "price_outliers"]),
    ),
    "market/price_bars_multi_tf": _family("price_bars_multi_tf", "multi_tf"),
    "market/price_bars_multi_tf_cal_anchor_iso": _family("price_bars_multi_tf_cal_anchor_iso", "cal_anchor_iso"),
    "market/price_bars_multi_tf_cal_anchor_us": _family("price_bars_multi_tf_cal_anchor_us", "cal_anchor_us"),
    "market/price_bars_multi_tf_cal_iso": _family("price_bars_multi_tf_cal_iso", "cal_iso"),
    "market/price_bars_multi_tf_cal_us": _family("price_bars_multi_tf_cal_us", "cal_us"),
    "market/price_histories": (
        ["catalog/exchanges", "catalog/symbols", "market/dim_assets"],
        MONTHLY,
        CRON,
        ["prices_not_crossed", "row_counts_exact"],
    ),
}


def test_the_asset_graph_is_the_declared_lineage(platform: Platform) -> None:
    assert _graph_table(platform.defs) == EXPECTED_GRAPH
    graph = platform.defs.resolve_asset_graph()
    # Every derived market month reads all of its parent's months before it, and its own stored rows.
    history = graph.get_partition_mapping(BAR_KEYS["multi_tf"], BAR_KEYS["1d"])
    parts = platform.defs.resolve_assets_def(BAR_KEYS["1d"]).partitions_def
    upstream = history.get_upstream_mapped_partitions_result_for_partitions(
        parts.subset_with_partition_keys(["2025-03-01"]), parts, parts
    ).partitions_subset
    assert sorted(upstream.get_partition_keys())[0] == FIRST_MONTH and "2025-03-01" in upstream.get_partition_keys()
    carry = graph.get_partition_mapping(BAR_KEYS["1d"], BAR_KEYS["1d"])
    own = carry.get_upstream_mapped_partitions_result_for_partitions(
        parts.subset_with_partition_keys(["2025-03-01"]), parts, parts
    ).partitions_subset
    assert "2025-03-01" not in own.get_partition_keys() and "2025-02-01" in own.get_partition_keys()
    for key in [PRICE_HISTORIES, *BAR_KEYS.values(), *EMA_KEYS.values()]:
        assert graph.get(key).code_version, key
    # A bar family's check against the loaded prices reads them: the check declares it.
    for key in BAR_KEYS.values():
        check = graph.get(dg.AssetCheckKey(key, "not_newer_than_prices"))
        assert check.parent_entity_keys == {key, PRICE_HISTORIES}, key


def _btc(first: str, last: str) -> list[str]:
    frame = pl.read_csv(BTC).filter(pl.col("timestamp").is_between(pl.lit(first), pl.lit(last)))
    return [",".join(str(v) for v in row) for row in frame.iter_rows()]


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("date,open,high,low,close,volume\n" + "".join(r + "\n" for r in rows))
    return path


def _load(platform: Platform, path: Path, months: tuple[str, str]) -> dg.ExecuteInProcessResult:
    return platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=months,
        ops={"market__price_histories": {"files": [{"path": str(path), "symbol": "BTCUSDT"}]}},
    )


def _tables(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every derived market table, row for row (without build times)."""
    rows = {}
    for table in [*BAR_TABLES.values(), *(f"{family}_packed" for family in EMA_FAMILIES)]:
        columns = [
            c
            for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = 'market' "
                "and table_name = %s and column_name <> 'built_at' order by ordinal_position",
                (table,),
            )
        ]
        listed = ", ".join(columns)
        rows[table] = conn.execute(f"select {listed} from market.{table} order by 1, 2, 3, 4").fetchall()  # noqa: S608
    return rows


def _requested(result) -> dict[str, tuple[str, str, int]]:
    """Asset -> (first, last, number) of the partitions automation requested."""
    found = {}
    for key, partitions in result._requested_partitions_by_asset_key.items():
        keys = sorted(p for p in partitions if p is not None)
        found[key.to_user_string()] = (keys[0], keys[-1], len(keys)) if keys else ("", "", 0)
    return found


def _last_month(platform: Platform) -> str:
    return platform.defs.resolve_assets_def(BAR_KEYS["1d"]).partitions_def.get_last_partition_key()


@needs_shared
def test_a_late_revision_makes_automation_rebuild_from_its_month_through_the_current_one(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    last = _last_month(platform)
    _load(platform, _write(tmp_path / "history.csv", _btc("2024-06-01", "2025-03-31")), ("2024-06-01", "2025-03-01"))
    platform.run(DIMENSIONS)
    assert platform.run(MARKET, partition_range=(FIRST_MONTH, last), ops=EMA_OPS).success
    now = datetime.now(UTC)
    first = dg.evaluate_automation_conditions(defs=platform.defs, instance=platform.instance, evaluation_time=now)
    assert first.total_requested == 0

    # A vendor revises a close of August 2024: the load records August only.
    row = _btc("2024-08-14", "2024-08-14")[0].split(",")
    _load(platform, _write(tmp_path / "rev.csv", [",".join([*row[:4], "62345.5", row[5]])]), ("2024-08-01",) * 2)
    later = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, evaluation_time=now + timedelta(minutes=1), cursor=first.cursor
    )
    months_through_now = len(pl.date_range(date(2024, 8, 1), date.fromisoformat(last), "1mo", eager=True))
    expected = {
        key.to_user_string(): ("2024-08-01", last, months_through_now)
        for key in (BARS | EMAS).resolve(platform.defs.resolve_asset_graph())
    }
    assert _requested(later) == expected

    # The run the daemon launches for that request: one run over the range, applying the changes only.
    requested = platform.run(MARKET, partition_range=("2024-08-01", last), ops=EMA_OPS)
    assert {e.partition for e in requested.get_asset_materialization_events()} == set(
        platform.defs.resolve_assets_def(BAR_KEYS["1d"]).partitions_def.get_partition_keys()[7:]
    )
    assert conn.execute("select count(*) from market.bars_dirty").fetchone() == (0,)
    incremental = _tables(conn)
    assert platform.run(MARKET, partition_range=(FIRST_MONTH, last), ops=EMA_OPS, rebuild="all").success
    assert _tables(conn) == incremental
    settled = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, evaluation_time=now + timedelta(minutes=2), cursor=later.cursor
    )
    assert settled.total_requested == 0


@needs_shared
def test_a_materialization_of_one_month_recomputes_exactly_it(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    last = _last_month(platform)
    _load(platform, _write(tmp_path / "history.csv", _btc("2024-06-01", "2024-12-31")), ("2024-06-01", "2024-12-01"))
    assert platform.run(MARKET, partition_range=(FIRST_MONTH, last), ops=EMA_OPS).success
    good = _tables(conn)
    # Rows from September on damaged behind the platform's back.
    conn.execute("update market.price_bars_multi_tf set close = close + 1 where trade_date >= '2024-09-01'")
    conn.execute("update market.ema_multi_tf_packed set close_sum = close_sum + 1 where trade_date >= '2024-09-01'")
    damaged = _tables(conn)
    september = platform.run(MARKET, partition_range=("2024-09-01", "2024-09-01"), ops=EMA_OPS, rebuild="all")
    assert {e.partition for e in september.get_asset_materialization_events()} == {"2024-09-01"}

    def in_september(table: str, row: tuple) -> bool:
        return date(2024, 9, 1) <= row[2 if table.endswith("_packed") else 3] < date(2024, 10, 1)

    for table, rows in _tables(conn).items():
        assert [r for r in rows if in_september(table, r)] == [r for r in good[table] if in_september(table, r)]
        assert [r for r in rows if not in_september(table, r)] == [
            r for r in damaged[table] if not in_september(table, r)
        ]

    # The sizes the runs reported are the tables' own; a count that drifted is reported.
    counts = dg.AssetSelection.checks(*ROW_COUNT_CHECKS)
    assert all(e.passed for e in platform.run(counts).get_asset_check_evaluations())
    conn.execute(
        "update ops.partition_rows set rows = rows + 1 "
        "where table_name = 'market.price_bars_multi_tf' and month = '2024-09-01'"
    )
    failed = [e for e in platform.run(counts).get_asset_check_evaluations() if not e.passed]
    assert [(e.asset_key, e.metadata["months_differing"].value) for e in failed] == [(BAR_KEYS["multi_tf"], 1)]


def _daily_rows(first: date, days: int) -> list[str]:
    return [f"{first + timedelta(days=i)},10,11,9,{10 + (i % 5) / 10},100" for i in range(days)]


def test_a_rolled_back_run_records_no_materialization_and_the_asset_turns_late(
    settings: Settings, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import (
        InProcessTestWorkspaceLoadTarget,
        create_test_daemon_workspace_context,
        freeze_time,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._daemon.freshness import FreshnessDaemon

    monkeypatch.setenv("TRADING_ASSETS_START_DATE", FIRST_MONTH)
    multi_tf = BAR_KEYS["multi_tf"]
    month = ("2026-11-01", "2026-11-01")
    first_day = datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    # The freshness daemon needs an instance it can reach from its workspace: a persistent test instance.
    with dg.instance_for_test() as instance:
        platform = Platform(Settings.from_env(), instance)
        _load(platform, _write(tmp_path / "x.csv", _daily_rows(date(2026, 11, 1), 20)), month)
        with freeze_time(first_day):
            assert platform.run(BARS - TABLE_CHECKS, partition_range=month).success
        # The next morning's run meets daily bars whose high fell below their low: its writes are rolled back.
        conn.execute("update market.price_bars_1d set high = low / 2 where trade_date >= '2026-11-10'")
        conn.execute("insert into market.bars_dirty values ('multi_tf', 1, '2026-11-10')")
        with freeze_time(first_day + timedelta(days=1)):
            failed = platform.run(dg.AssetSelection.assets(multi_tf), partition_range=month, raise_on_error=False)
        assert not failed.success and not failed.get_asset_materialization_events()
        evaluations = {e.check_name: e for e in failed.get_asset_check_evaluations()}
        assert not evaluations["ohlc_consistent"].passed
        assert evaluations["ohlc_consistent"].metadata["rolled_back"].value
        [record] = instance.fetch_materializations(multi_tf, limit=1).records
        assert record.timestamp == first_day.timestamp()  # the last materialization is still the good one

        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="trading_assets.definitions", attribute="defs"),
            location_name="trading_assets",
        )
        with create_test_daemon_workspace_context(InProcessTestWorkspaceLoadTarget(origin), instance) as workspace:

            def state_at(moment: datetime) -> FreshnessState:
                with freeze_time(moment):
                    list(FreshnessDaemon().run_iteration(workspace))
                return instance.get_freshness_state_records([multi_tf])[multi_tf].freshness_state

            assert state_at(first_day + timedelta(hours=1)) == FreshnessState.PASS
            # Due by 07:00 UTC from a run after 01:00: the rolled-back run of the second morning does not count.
            assert state_at(first_day + timedelta(days=1, hours=1)) == FreshnessState.FAIL


def test_a_new_timeframe_or_ema_period_rebuilds_exactly_the_tables_it_changes(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    last = _last_month(platform)
    _load(platform, _write(tmp_path / "x.csv", _daily_rows(date(2024, 1, 1), 200)), ("2024-01-01", "2024-07-01"))
    platform.run(DIMENSIONS)
    assert platform.run(MARKET, partition_range=(FIRST_MONTH, last), ops=EMA_OPS).success
    sensor = next(s for s in platform.defs.sensors if s.name == "market_dimensions_changed")
    idle = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance))
    assert len(idle.run_requests) == 1  # no cursor yet: observes once
    assert not sensor.evaluate_tick(
        dg.build_sensor_context(instance=platform.instance, cursor=idle.cursor)
    ).run_requests
    now = datetime.now(UTC)
    evaluated = dg.evaluate_automation_conditions(defs=platform.defs, instance=platform.instance, evaluation_time=now)
    months = len(platform.defs.resolve_assets_def(BAR_KEYS["1d"]).partitions_def.get_partition_keys())
    everything = (FIRST_MONTH, last, months)

    def evaluate(minutes: int) -> dict[str, tuple[str, str, int]]:
        nonlocal evaluated
        evaluated = dg.evaluate_automation_conditions(
            defs=platform.defs,
            instance=platform.instance,
            evaluation_time=now + timedelta(minutes=minutes),
            cursor=evaluated.cursor,
        )
        return _requested(evaluated)

    def observe_and_evaluate(minutes: int) -> dict[str, tuple[str, str, int]]:
        # A tick after the previous run has settled, as the daemon's would be.
        assert evaluate(minutes) == {}
        noticed = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance, cursor=idle.cursor))
        assert len(noticed.run_requests) == 1  # the edit is seen: an observation run
        platform.run(DIMENSIONS)
        return evaluate(minutes + 1)

    # A two-month timeframe for the ISO calendar family: that family and the EMAs over it, every month.
    conn.execute("insert into market.dim_timeframe (family, tf) values ('cal_iso', '2M_CAL')")
    assert observe_and_evaluate(1) == {
        "market/price_bars_multi_tf_cal_iso": everything,
        "market/ema_multi_tf_cal_iso": everything,
    }
    assert platform.run(MARKET, partition_range=(FIRST_MONTH, last), ops=EMA_OPS).success
    built = conn.execute(
        "select count(*), count(*) filter (where not is_partial_end) from market.price_bars_multi_tf_cal_iso "
        "where tf = '2M_CAL'"
    ).fetchone()
    assert built == (200, 3)  # Jan-Feb, Mar-Apr and May-Jun complete; July in progress
    assert conn.execute("select count(distinct tf) from market.ema_multi_tf_cal_iso where tf = '2M_CAL'").fetchone()

    # A new EMA period: every EMA family over every month, no bars.
    conn.execute("insert into market.dim_ema_period (period) values (6)")
    assert observe_and_evaluate(10) == {key.to_user_string(): everything for key in EMA_KEYS.values()}
    assert platform.run(EMAS, partition_range=(FIRST_MONTH, last), ops=EMA_OPS).success
    assert conn.execute("select count(*) from market.ema_multi_tf where period = 6 and tf = '1D'").fetchone() == (195,)
    # Retiring a timeframe removes its rows at the family's next rebuild; deleting its row is refused.
    with pytest.raises(psycopg.errors.RaiseException, match="set is_active = false"):
        conn.execute("delete from market.dim_timeframe where tf = '2M_CAL'")
    conn.execute("update market.dim_timeframe set is_active = false where tf = '2M_CAL'")
    assert observe_and_evaluate(20) == {
        "market/price_bars_multi_tf_cal_iso": everything,
        "market/ema_multi_tf_cal_iso": everything,
    }
    assert platform.run(MARKET, partition_range=(FIRST_MONTH, last), ops=EMA_OPS).success
    gone = "select count(*) from market.{} where tf = '2M_CAL'"
    assert conn.execute(gone.format("price_bars_multi_tf_cal_iso")).fetchone() == (0,)
    assert conn.execute(gone.format("ema_multi_tf_cal_iso_packed")).fetchone() == (0,)
