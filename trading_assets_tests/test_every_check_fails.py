"""Every asset check of the code location is seen failing on the bad state it exists for, with the offending
rows in its metadata; a blocking one also stops what is built on its asset.

The market checks are exercised here on a database built once (two assets, bars and EMAs of every family) and
cloned per case; the others by the tests named in ELSEWHERE. A last test fails when a check of the code
location is covered by neither, so a new check cannot arrive without its failing case.
"""

import importlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import polars as pl
import psycopg
import pytest
from psycopg import sql

from trading_assets.config import Settings
from trading_assets.definitions import build_definitions
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market import assets as market_assets
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES, BarTally, WrittenBars
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.io import market_store
from trading_assets.io.ema_store import EMA_SOURCES
from trading_assets_tests.conftest import SHARED_DATA, Platform, database_copy

LEAN_SPY = SHARED_DATA / "daily" / "lean_equity_usa_spy_1d.csv"
needs_shared = pytest.mark.skipif(not LEAN_SPY.exists(), reason="../shared/data is not beside the project")
FIRST, LAST = date(2019, 7, 1), date(2021, 3, 31)
MONTHS = ("2019-07-01", "2021-03-01")
MARKET = dg.AssetSelection.assets(*BAR_KEYS.values(), *EMA_KEYS.values()) - TABLE_CHECKS
MULTI = [f for f in BAR_KEYS if f != "1d"]

# Checks seen failing by other tests (check name -> the tests, as module::function).
ELSEWHERE = {
    **{
        name: ["test_corporate_actions::test_each_check_fails_on_the_bad_state_it_exists_for"]
        for name in (
            "factors_positive",
            "factor_dates_ordered",
            "splits_match_price_jumps",
            "unexplained_price_jumps",
            "tickers_one_per_day",
        )
    },
    "prices_not_crossed": [
        "test_market_bars::test_a_file_with_a_crossed_row_fails_the_blocking_check_and_stops_the_bars"
    ],
    "backup_recent": ["test_ops::test_backup_recent_fails_when_the_last_backup_is_old"],
    "restore_test_passed": ["test_ops::test_backup_dumps_with_checksum_and_counts_then_the_restore_test_compares"],
    "database_size_thresholds": ["test_ops::test_size_thresholds_warn_then_fail_with_the_projected_date"],
    **{
        name: ["test_ops::test_retention_checks_fail_on_overdue_unverified_and_shrunk"]
        for name in ("retention_respected", "archives_verified", "permanent_tables_intact")
    },
    "macro_values_known_when_used": ["test_trading::test_macro_check_fails_on_a_value_used_before_its_release"],
    "macro_slopes_match_yields": ["test_trading::test_macro_check_fails_on_a_value_used_before_its_release"],
    "vix_front_not_expired": [
        "test_trading::test_vix_checks_fail_on_an_expired_front_and_an_odd_curve",
        "test_trading::test_a_blocking_vix_check_rolls_the_run_back",
    ],
    "trades_never_deleted": ["test_trading::test_trades_never_deleted_fails_when_a_trade_went_missing"],
    "trade_files_recorded": ["test_trading::test_trades_load_once_refuse_bad_lines_and_are_permanent"],
    **{
        name: ["test_trading::test_option_checks_fail_on_crossed_off_grid_stale_and_missing_features"]
        for name in ("chain_quotes_valid", "strikes_on_grid", "chain_fresh_in_session", "features_complete")
    },
    **{
        name: ["test_trading::test_bar_checks_fail_outside_the_session_on_disordered_ohlc_and_unread_files"]
        for name in ("bars_within_session", "bars_ohlc_ordered", "intraday_files_caught_up")
    },
    "vix_curve_sane": ["test_trading::test_vix_checks_fail_on_an_expired_front_and_an_odd_curve"],
    "timezone_present": [
        "test_checks_fail_catalog_series::test_timezone_present_fails_on_a_symbol_of_an_exchange_without_timezone"
    ],
    "timezone_matches_exchange": [
        "test_checks_fail_catalog_series::test_timezone_matches_exchange_fails_on_a_symbol_in_another_timezone"
    ],
    "structural_fields_present": [
        "test_checks_fail_catalog_series::test_structural_fields_present_fails_on_symbols_without_tick_data"
    ],
    "crypto_in_utc": ["test_catalog::test_warn_checks_name_the_symbols_a_person_should_look_at"],
    "listing_complete": [
        "test_catalog_hostile_input::test_a_one_symbol_listing_retires_nothing_and_warns_until_marked_full"
    ],
    "one_current_version": [
        "test_checks_fail_catalog_series::test_one_current_version_fails_on_two_current_versions_and_blocks_the_publication"
    ],
    "versions_contiguous": [
        "test_checks_fail_catalog_series::test_versions_contiguous_fails_on_a_gap_between_versions_and_blocks_the_publication"
    ],
    "bounds_in_utc": [
        "test_checks_fail_catalog_series::test_bounds_in_utc_fails_on_local_time_bounds_and_blocks_the_publication"
    ],
    "every_series_observed": [
        "test_checks_fail_catalog_series::test_every_series_observed_fails_on_a_described_series_without_observations"
    ],
    "series_fresh": [
        "test_checks_fail_catalog_series::test_series_fresh_fails_on_series_whose_newest_observation_is_too_old"
    ],
    "model_col_valid": [
        "test_checks_fail_catalog_series::test_model_col_valid_fails_on_invalid_model_cols_and_blocks_the_map_and_the_view"
    ],
    "view_columns_match": [
        "test_checks_fail_catalog_series::test_view_columns_match_fails_on_a_view_out_of_step_with_the_map"
    ],
    "dim_map_mismatch": ["test_series_slice::test_tampered_map_fails_the_blocking_check_and_blocks_the_view"],
    "bars_fresh": ["test_operator_runbook::test_a_stale_asset_waits_alone_is_listed_and_alerted_once"],
    "gaps_against_calendar": ["test_operator_runbook::test_gap_flags_on_real_files_match_the_calendar"],
    "ema_values_valid": ["test_market_emas::test_nan_ema_fails_the_blocking_check_and_keeps_the_previous_rows"],
    "ema_within_price_bounds": [
        "test_market_emas::test_d22_out_of_bounds_ema_is_rejected_with_its_bounds_and_still_stored"
    ],
    "spool_nothing_waiting": [
        "test_stage1::test_spool_checks_fail_on_waiting_growth_bad_folds_unmeasured_runs_and_unmastered_datasets"
    ],
    "spool_waiting_not_growing": [
        "test_stage1::test_spool_checks_fail_on_waiting_growth_bad_folds_unmeasured_runs_and_unmastered_datasets"
    ],
    "run_folds_match_summary": [
        "test_stage1::test_spool_checks_fail_on_waiting_growth_bad_folds_unmeasured_runs_and_unmastered_datasets"
    ],
    "runs_reference_measured_datasets": [
        "test_stage1::test_spool_checks_fail_on_waiting_growth_bad_folds_unmeasured_runs_and_unmastered_datasets"
    ],
    "legacy_datasets_have_master_rows": [
        "test_stage1::test_spool_checks_fail_on_waiting_growth_bad_folds_unmeasured_runs_and_unmastered_datasets"
    ],
    "measurements_exist": ["test_stage1::test_a_dataset_built_from_our_bars_and_emas"],
    "metadata_counts_match": ["test_stage1::test_a_dataset_built_from_our_bars_and_emas"],
}


def _prices(path: Path, days: list[date], base: float) -> Path:
    lines = [
        f"{d},{base + i % 9},{base + i % 9 + 2},{base + i % 9 - 1},{base + i % 9 + 1},{100 + i}"
        for i, d in enumerate(days)
    ]
    path.write_text("date,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def built_database(server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database with a 24/7 asset and an XNYS one (real SPY), bars and EMAs of every family built."""
    folder = tmp_path_factory.mktemp("built")
    with database_copy(server_url, template_database) as url:
        with pytest.MonkeyPatch.context() as env, dg.DagsterInstance.ephemeral() as instance:
            _environment(env, folder, url)
            platform = Platform(Settings.from_env(), instance)
            spy = folder / "spy.csv"
            spy.write_text(
                "".join(
                    line + "\n" for line in LEAN_SPY.read_text().splitlines() if "20190701" <= line[:8] <= "20210331"
                )
            )
            crypto = _prices(
                folder / "c.csv", [FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)], 100.0
            )
            files = [
                {"path": str(crypto), "symbol": "COIN"},
                {
                    "path": str(spy),
                    "symbol": "SPY",
                    "price_divisor": 10000.0,
                    "calendar": "XNYS",
                    "timezone": "America/New_York",
                },
            ]
            loaded = platform.run(
                dg.AssetSelection.assets(PRICE_HISTORIES),
                partition_range=MONTHS,
                ops={"market__price_histories": {"files": files}},
            )
            assert loaded.success
            ops = {"__".join(k.path): {"skip_stale_check": True} for k in EMA_KEYS.values()}
            assert platform.run(MARKET, partition_range=MONTHS, ops=ops).success
        yield url


def _environment(env: pytest.MonkeyPatch, folder: Path, url: str) -> None:
    env.setenv("TRADING_ASSETS_HOME", str(folder / "home"))
    env.setenv("TRADING_ASSETS_DATABASE_URL", url)
    env.setenv("TRADING_ASSETS_START_DATE", FIRST.isoformat())
    env.delenv("DAGSTER_PG_URL", raising=False)


@pytest.fixture
def built(server_url: str, built_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A clone of the built database, for one case to damage."""
    with database_copy(server_url, urlsplit(built_database).path.lstrip("/")) as url:
        _environment(monkeypatch, tmp_path, url)
        with dg.DagsterInstance.ephemeral() as instance:
            yield Platform(Settings.from_env(), instance)


def _evaluate(platform: Platform, key: dg.AssetKey, name: str) -> dg.AssetCheckEvaluation:
    result = platform.run(dg.AssetSelection.checks(dg.AssetCheckKey(key, name)), raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def _fails_naming(evaluation: dg.AssetCheckEvaluation, *shown: object) -> None:
    """Failed, with the offending rows (each of `shown` appears in its sample)."""
    assert not evaluation.passed
    sample = str(evaluation.metadata["sample"].value)
    for value in shown:
        assert str(value) in sample, (value, sample)


def _coin(conn: psycopg.Connection) -> int:
    return conn.execute("select asset_id from market.dim_assets where symbol = 'COIN'").fetchone()[0]


def _smallest_tf(conn: psycopg.Connection, table: str, canonical: str) -> str:
    query = sql.SQL("select tf from market.{} where {} group by tf order by min(tf_days), count(*) desc limit 1")
    return conn.execute(query.format(sql.Identifier(table), sql.SQL(canonical))).fetchone()[0]


@needs_shared
@pytest.mark.parametrize("family", MULTI)
def test_bar_coverage_and_spacing_fail_on_missing_bars(built: Platform, family: str) -> None:
    table = market_store.BAR_TABLES[family]
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin, tf = _coin(conn), _smallest_tf(conn, table, "not is_partial_end")
        # A canonical row deleted behind the platform's back: that bar has no close any more.
        conn.execute(
            sql.SQL(
                "delete from market.{0} where (asset_id, tf, trade_date) = (select asset_id, tf, trade_date "
                "from market.{0} where asset_id = %s and tf = %s and not is_partial_end "
                "order by trade_date offset 2 limit 1)"
            ).format(sql.Identifier(table)),
            (coin, tf),
        )
        _fails_naming(_evaluate(built, BAR_KEYS[family], "canonical_spacing"), coin, tf)
        conn.execute(
            sql.SQL("delete from market.{} where asset_id = %s and tf = %s").format(sql.Identifier(table)), (coin, tf)
        )
    coverage = _evaluate(built, BAR_KEYS[family], "coverage")
    _fails_naming(coverage, coin, tf)
    assert coverage.severity == dg.AssetCheckSeverity.ERROR


@needs_shared
@pytest.mark.parametrize("family", list(EMA_KEYS))
def test_ema_coverage_spacing_and_seed_fail_on_damaged_emas(built: Platform, family: str) -> None:
    packed = f"{family}_packed"
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin, tf = _coin(conn), _smallest_tf(conn, packed, "not roll")
        # Eight canonical rows gone: the closes around them are further apart than the timeframe allows.
        conn.execute(
            sql.SQL(
                "delete from market.{0} where (asset_id, tf, trade_date) in (select asset_id, tf, trade_date from "
                "market.{0} where asset_id = %s and tf = %s and not roll order by trade_date offset 20 limit 8)"
            ).format(sql.Identifier(packed)),
            (coin, tf),
        )
        _fails_naming(_evaluate(built, EMA_KEYS[family], "canonical_spacing"), coin, tf)
        # A seed row turned into a preview row: the series then starts before its seed.
        seed = conn.execute(
            sql.SQL(
                "select tf, min(trade_date) from market.{} where asset_id = %s and not roll "
                "group by tf order by 1 limit 1"
            ).format(sql.Identifier(family)),
            (coin,),
        ).fetchone()
        conn.execute(
            sql.SQL("update market.{} set roll = true where asset_id = %s and tf = %s and trade_date = %s").format(
                sql.Identifier(packed)
            ),
            (coin, *seed),
        )
        _fails_naming(_evaluate(built, EMA_KEYS[family], "no_rows_before_seed"), coin, seed[0])
        # A period added without its EMAs built: every series long enough for it lacks it.
        conn.execute("insert into market.dim_ema_period (period) values (5)")
    coverage = _evaluate(built, EMA_KEYS[family], "coverage")
    assert coverage.severity == dg.AssetCheckSeverity.ERROR
    _fails_naming(coverage, coin, " 5 |")


@needs_shared
@pytest.mark.parametrize("key", [PRICE_HISTORIES, *BAR_KEYS.values(), *EMA_KEYS.values()], ids=lambda k: k.path[-1])
def test_row_counts_exact_fails_on_a_row_deleted_behind_the_writer(built: Platform, key: dg.AssetKey) -> None:
    table = (
        sql.Identifier(*key.path)
        if key.path[-1] not in EMA_KEYS
        else sql.Identifier("market", f"{key.path[-1]}_packed")
    )
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("delete from {0} where ctid = (select ctid from {0} where trade_date = %s limit 1)").format(table),
            (date(2021, 3, 1),),
        )
    evaluation = _evaluate(built, key, "row_counts_exact")
    _fails_naming(evaluation, "2021-03-01")


@needs_shared
def test_price_outliers_and_the_freshness_gate_fail_naming_the_rows(built: Platform) -> None:
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin = _coin(conn)
        conn.execute(
            "update market.price_bars_1d set high = close * 5 where asset_id = %s and trade_date = '2021-02-16'",
            (coin,),
        )
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) values ('ema_multi_tf', %s, '2021-03-01')",
            (coin,),
        )
    outliers = _evaluate(built, BAR_KEYS["1d"], "price_outliers")
    assert not outliers.passed and "2021-02-16" in outliers.metadata["rows"].value
    gate = _evaluate(built, BAR_KEYS["1d"], "fresh_for_emas")  # its newest bar is months old
    assert not gate.passed and gate.metadata["stale_asset_ids"].value == [coin]
    assert f"Bars stale for IDs: [{coin}] (COIN)" == gate.metadata["alert"].value


@needs_shared
@pytest.mark.parametrize("family", MULTI)
def test_bar_invariants_roll_back_the_family_and_stop_its_emas(built: Platform, family: str) -> None:
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin = _coin(conn)
        before = conn.execute(
            sql.SQL("select count(*), sum(close) from market.{}").format(
                sql.Identifier(market_store.BAR_TABLES[family])
            )
        ).fetchone()
        # Daily bars broken behind the platform's back (high below low), and one without its price.
        conn.execute(
            "update market.price_bars_1d set high = low / 2 where asset_id = %s and trade_date = '2021-03-01'", (coin,)
        )
        conn.execute("delete from market.price_histories where asset_id = %s and trade_date = '2021-03-02'", (coin,))
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) values (%s, %s, '2021-03-01') "
            "on conflict do nothing",
            (family, coin),
        )
    downstream = {EMA_KEYS[f] for f, sources in EMA_SOURCES.items() if family in sources}
    ops = {"__".join(k.path): {"skip_stale_check": True} for k in downstream}
    selection = dg.AssetSelection.assets(BAR_KEYS[family], *downstream) - TABLE_CHECKS
    result = built.run(selection, partition_range=("2021-03-01",) * 2, ops=ops, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == BAR_KEYS[family]}
    for name, shown in [("ohlc_consistent", "2021-03-01"), ("not_newer_than_prices", "2021-03-02")]:
        assert not checks[name].passed and checks[name].blocking
        assert shown in checks[name].metadata["rows"].value
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert BAR_KEYS[family] not in materialized and not downstream & materialized
    with psycopg.connect(built.settings.database_url) as conn:
        after = conn.execute(
            sql.SQL("select count(*), sum(close) from market.{}").format(
                sql.Identifier(market_store.BAR_TABLES[family])
            )
        ).fetchone()
    assert after == before


def _spy(conn: psycopg.Connection) -> int:
    return conn.execute("select asset_id from market.dim_assets where symbol = 'SPY'").fetchone()[0]


@needs_shared
@pytest.mark.parametrize("key", [*(BAR_KEYS[f] for f in MULTI), *EMA_KEYS.values()], ids=lambda k: k.path[-1])
def test_an_implausible_daily_close_quarantines_its_asset_only(built: Platform, key: dg.AssetKey) -> None:
    family = next(f for f, k in {**BAR_KEYS, **EMA_KEYS}.items() if k == key)
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin, spy = _coin(conn), _spy(conn)
        # A finite but absurd close edited into the daily bars behind the platform's back.
        conn.execute(
            "update market.price_bars_1d set close = 1.7e308, high = 1.7e308 "
            "where asset_id = %s and trade_date = '2021-03-01'",
            (coin,),
        )
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) values (%s, %s, '2021-03-01'), "
            "(%s, %s, '2021-03-01') on conflict do nothing",
            (family, coin, family, spy),
        )
    ops = {"__".join(key.path): {"skip_stale_check": True}} if key in EMA_KEYS.values() else {}
    result = built.run(
        dg.AssetSelection.assets(key) - TABLE_CHECKS, partition_range=("2021-03-01",) * 2, ops=ops, raise_on_error=False
    )
    [quarantine] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_asset_quarantined"]
    assert not quarantine.passed and quarantine.severity == dg.AssetCheckSeverity.ERROR
    [(name, why)] = quarantine.metadata["quarantined"].value.items()
    assert name == f"{coin} (COIN)" and "2021-03-01" in why and "1.7e+308" in why
    [materialization] = result.get_asset_materialization_events()
    assert materialization.asset_key == key
    with psycopg.connect(built.settings.database_url) as conn:
        rebuilt = dict(
            conn.execute(
                "select asset_id, rows_last_written from market.refresh_state where family = %s and last_run_id = %s",
                (family, result.run_id),
            ).fetchall()
        )
        waiting = dict(conn.execute("select asset_id, dirty_from from market.bars_dirty where family = %s", (family,)))
    assert list(rebuilt) == [spy] and rebuilt[spy] > 0
    assert waiting == {coin: date(2021, 3, 1)}


@needs_shared
@pytest.mark.parametrize("broken", ["COIN", "every asset"])
def test_a_build_fault_quarantines_its_asset_but_a_fault_of_every_asset_fails_the_run(
    built: Platform, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin, spy = _coin(conn), _spy(conn)
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) values ('multi_tf', %s, '2021-03-01'), "
            "('multi_tf', %s, '2021-03-01') on conflict do nothing",
            (coin, spy),
        )
        before = conn.execute("select count(*), sum(close) from market.price_bars_multi_tf").fetchone()
    failing = {coin} if broken == "COIN" else {coin, spy}
    kernel = market_assets.multi_tf_bars

    def faulty(daily: pl.DataFrame, *args, **kwargs) -> pl.DataFrame:
        if failing & set(daily["asset_id"].to_list()):
            raise RuntimeError("kernel fault")
        return kernel(daily, *args, **kwargs)

    monkeypatch.setattr(market_assets, "multi_tf_bars", faulty)
    result = built.run(
        dg.AssetSelection.assets(BAR_KEYS["multi_tf"]) - TABLE_CHECKS,
        partition_range=("2021-03-01",) * 2,
        raise_on_error=False,
    )
    with psycopg.connect(built.settings.database_url) as conn:
        after = conn.execute("select count(*), sum(close) from market.price_bars_multi_tf").fetchone()
        waiting = {a for (a,) in conn.execute("select asset_id from market.bars_dirty where family = 'multi_tf'")}
    if broken == "COIN":
        [quarantine] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_asset_quarantined"]
        assert quarantine.metadata["quarantined"].value == {f"{coin} (COIN)": "RuntimeError: kernel fault"}
        assert result.success and waiting == {coin}
    else:
        # Nothing could be built: a materialization would claim months that no run made consistent.
        assert not result.success and result.get_asset_materialization_events() == []
        assert after == before and waiting == {coin, spy}


@needs_shared
def test_changes_applied_lists_what_still_waits_after_a_run(built: Platform) -> None:
    with psycopg.connect(built.settings.database_url, autocommit=True) as conn:
        coin = _coin(conn)
        # A revision before the run's window: the run cannot apply it (it writes only inside its months).
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) values ('multi_tf', %s, '2019-09-01')",
            (coin,),
        )
    result = built.run(
        dg.AssetSelection.assets(BAR_KEYS["multi_tf"]) - TABLE_CHECKS, partition_range=("2021-03-01",) * 2
    )
    [applied] = [e for e in result.get_asset_check_evaluations() if e.check_name == "changes_applied"]
    assert not applied.passed and applied.metadata["waiting_since"].value == {"COIN": "2019-09-01"}


def test_one_canonical_row_per_bar_and_the_daily_invariants_see_bad_rows(
    settings: Settings, conn: psycopg.Connection
) -> None:
    """The daily bars come straight from validated prices: their invariants can only break through a compute
    bug, so the bad rows are handed to the run's tally as a bug would write them."""
    conn.execute("insert into market.dim_assets (symbol) values ('X')")
    [asset] = conn.execute("select asset_id from market.dim_assets").fetchone()
    day = date(2024, 1, 2)
    bars = pl.DataFrame(
        {
            "asset_id": [asset, asset, asset],
            "tf": ["1W_CAL", "1W_CAL", "1W_CAL"],
            "bar_seq": [1, 1, 2],
            "trade_date": [day, day + timedelta(days=1), day + timedelta(days=7)],
            "open": [10.0, 10.0, 10.0],
            "high": [11.0, 11.0, 9.0],
            "low": [9.0, 9.0, 9.5],
            "close": [10.0, 10.0, 10.0],
            "is_partial_end": [False, False, False],
        }
    )
    tally, from_prices_held = BarTally(), BarTally()
    with psycopg.connect(settings.database_url) as writer:
        tally.add(writer, WrittenBars.of(bars))
        # The daily bars compare with the price rows they were built from: here only the first day's.
        from_prices_held.add(writer, WrittenBars.of(bars), pl.DataFrame({"asset_id": [asset], "trade_date": [day]}))
    assert from_prices_held.violations["not_newer_than_prices"] == 2
    results = {r.check_name: r for r in tally.check_results()}
    assert tally.failed
    duplicates = results["one_canonical_row_per_bar"]
    assert not duplicates.passed and duplicates.metadata["violations"].value == 2
    assert "2024-01-03" in duplicates.metadata["rows"].value
    assert not results["ohlc_consistent"].passed and "2024-01-09" in results["ohlc_consistent"].metadata["rows"].value
    assert not results["not_newer_than_prices"].passed
    assert results["not_newer_than_prices"].metadata["violations"].value == 3
    # A family's groups of assets are summed up as one: counts add, rows per day stay, the sample spans them.
    whole, parts = WrittenBars.of(bars), WrittenBars.concat([WrittenBars.of(bars.head(2)), WrittenBars.of(bars[2:])])
    assert parts.violations["ohlc_consistent"][0] == whole.violations["ohlc_consistent"][0] == 1
    assert parts.days.sort("trade_date").equals(whole.days.sort("trade_date"))
    assert (parts.sample["trade_date"][0], parts.sample["trade_date"][-1]) == (day, day + timedelta(days=7))


def _covered_here() -> set[str]:
    return {
        "coverage", "canonical_spacing", "no_rows_before_seed", "row_counts_exact", "price_outliers", "fresh_for_emas",
        "ohlc_consistent", "not_newer_than_prices", "one_canonical_row_per_bar", "changes_applied",
        "no_asset_quarantined",
    }  # fmt: skip


def test_every_check_of_the_code_location_is_seen_failing(settings: Settings) -> None:
    defs = build_definitions(settings)
    names = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    uncovered = names - _covered_here() - set(ELSEWHERE)
    assert not uncovered, f"checks never seen failing in a test: {sorted(uncovered)}"
    for name, tests in ELSEWHERE.items():
        for test in tests:
            module, function = test.split("::")
            assert callable(getattr(importlib.import_module(f"trading_assets_tests.{module}"), function, None)), (
                name,
                test,
            )
