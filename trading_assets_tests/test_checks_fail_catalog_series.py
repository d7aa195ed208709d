"""The catalog and core_energy asset checks, each seen failing on the bad state it exists for with the offending
rows (symbols, series, columns) in its metadata; a blocking one also stops what is built on its asset.

The WARN catalog check crypto_in_utc is seen failing, naming its symbol, in
test_catalog::test_warn_checks_name_the_symbols_a_person_should_look_at, and dim_map_mismatch in
test_series_slice::test_tampered_map_fails_the_blocking_check_and_blocks_the_view.
"""

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
from psycopg import sql

from trading_assets import catalog
from trading_assets.defs.catalog.assets import CATALOG_KEYS, CATALOG_OP, SYMBOLS, SYMBOLS_PARQUET
from trading_assets.defs.market.assets import PRICE_HISTORIES
from trading_assets.defs.metadata.assets import (
    DIM_SERIES,
    FACT_SERIES_VALUE,
    MAP_MODEL_SERIES,
    V_SERIES_WIDE,
)
from trading_assets.io import catalog_store
from trading_assets_tests.conftest import Platform

AT = datetime(2024, 1, 1, tzinfo=UTC)
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def _evaluate(platform: Platform, key: dg.AssetKey, name: str) -> dg.AssetCheckEvaluation:
    """The check alone, on the database as it is."""
    result = platform.run(dg.AssetSelection.checks(dg.AssetCheckKey(key, name)), raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def _listed(evaluation: dg.AssetCheckEvaluation, entry: str) -> set[str]:
    """The items of a comma-separated metadata entry."""
    text = str(evaluation.metadata[entry].value)
    return set(text.split(", ")) if text else set()


# --- catalog/symbols: WARN checks on the current versions -------------------------------------------------------


def test_timezone_present_fails_on_a_symbol_of_an_exchange_without_timezone(platform: Platform) -> None:
    # An exchange registered without a timezone: its symbols inherit none.
    catalog.upsert_exchanges([{"exchange": "OTC", "country": "US"}], effective_at=AT, settings=platform.settings)
    catalog.upsert_symbols(
        [{"symbol": "OTC:PINK", "pricescale": 100, "minmov": 1}, {"symbol": "NYSE:IBM", "pricescale": 100}],
        effective_at=AT,
        settings=platform.settings,
    )
    evaluation = _evaluate(platform, SYMBOLS, "timezone_present")
    assert not evaluation.passed and evaluation.severity == WARN
    assert evaluation.metadata["sample"].value == "OTC:PINK"
    assert (evaluation.metadata["symbols"].value, evaluation.metadata["of"].value) == (1, 2)


def test_timezone_matches_exchange_fails_on_a_symbol_in_another_timezone(platform: Platform) -> None:
    catalog.upsert_symbols(
        [
            {"symbol": "NYSE:IBM", "pricescale": 100, "minmov": 1},
            {"symbol": "NYSE:SONY", "timezone": "Asia/Tokyo", "pricescale": 100, "minmov": 1},
        ],
        effective_at=AT,
        settings=platform.settings,
    )
    evaluation = _evaluate(platform, SYMBOLS, "timezone_matches_exchange")
    assert not evaluation.passed and evaluation.severity == WARN
    assert evaluation.metadata["sample"].value == "NYSE:SONY"
    assert (evaluation.metadata["symbols"].value, evaluation.metadata["of"].value) == (1, 2)


def test_structural_fields_present_fails_on_symbols_without_tick_data(platform: Platform) -> None:
    complete = {"pricescale": 100, "minmov": 1, "lot_size": 1.0}
    catalog.upsert_symbols(
        [
            {"symbol": "NYSE:IBM", **complete},
            {"symbol": "NYSE:HPQ", **complete},
            {"symbol": "NYSE:GE", "pricescale": 100, "minmov": 1},  # no lot size
            {"symbol": "NYSE:F"},  # nothing structural at all
        ],
        effective_at=AT,
        settings=platform.settings,
    )
    evaluation = _evaluate(platform, SYMBOLS, "structural_fields_present")
    assert not evaluation.passed and evaluation.severity == WARN
    assert evaluation.metadata["missing_lot_size"].value == 0.5
    assert evaluation.metadata["missing_pricescale"].value == 0.25
    assert evaluation.metadata["sample"].value == "NYSE:F (tick_size, pricescale, minmov, lot_size), NYSE:GE (lot_size)"


# --- catalog/symbols: blocking checks inside the catalog op -------------------------------------------------------


def _load_blocked(platform: Platform, tmp_path: Path) -> dg.ExecuteInProcessResult:
    """A catalog load of one new symbol, with the prices built on the catalog in the same run."""
    records = tmp_path / "listing.json"
    records.write_text(json.dumps([{"symbol": "NASDAQ:AAPL", "pricescale": 100, "minmov": 1}]))
    return platform.run(
        dg.AssetSelection.assets(*CATALOG_KEYS, PRICE_HISTORIES),
        partition_range=("2024-01-01", "2024-01-01"),
        ops={
            CATALOG_OP: {"inputs": [str(records)], "source": "file", "effective_at": AT.isoformat()},
            "market__price_histories": {"files": []},
        },
        raise_on_error=False,
    )


def _blocked(platform: Platform, result: dg.ExecuteInProcessResult, conn: psycopg.Connection) -> dict:
    """Asserts nothing was materialized, published or committed; returns the failed checks by name."""
    assert not result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert not materialized & {*CATALOG_KEYS, PRICE_HISTORIES}
    assert not (platform.settings.lakehouse / SYMBOLS_PARQUET.path[-1]).exists()
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone()[0] == 0
    return {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}


def test_one_current_version_fails_on_two_current_versions_and_blocks_the_publication(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    # A database without the guards the migrations give (a restored dump, a constraint dropped by hand):
    # two versions of one symbol are both current.
    conn.execute("alter table catalog.symbols drop constraint symbols_versions_do_not_overlap")
    conn.execute("drop index catalog.symbols_one_current")
    conn.execute(
        "insert into catalog.symbols (symbol, valid_from, valid_until, active, recorded_at) values "
        "('NYSE:TWIN', '2019-01-01', null, true, now()), ('NYSE:TWIN', '2020-01-01', null, true, now()), "
        "('NYSE:IBM', '2019-01-01', null, true, now())"
    )
    failed = _blocked(platform, _load_blocked(platform, tmp_path), conn)
    check = failed["one_current_version"]
    assert check.blocking and check.metadata["sample"].value == "NYSE:TWIN"
    assert check.metadata["violations"].value == 1
    assert set(failed) == {"one_current_version", "versions_contiguous"}  # the older one also never ends


def test_versions_contiguous_fails_on_a_gap_between_versions_and_blocks_the_publication(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    # A bad hand edit left a gap in a symbol's history.
    conn.execute(
        "insert into catalog.symbols (symbol, valid_from, valid_until, active, recorded_at) values "
        "('NYSE:GAP', '2019-01-01', '2019-06-01', true, now()), ('NYSE:GAP', '2020-01-01', null, true, now()), "
        "('NYSE:IBM', '2019-01-01', '2019-06-01', true, now()), ('NYSE:IBM', '2019-06-01', null, true, now())"
    )
    failed = _blocked(platform, _load_blocked(platform, tmp_path), conn)
    assert set(failed) == {"versions_contiguous"}
    check = failed["versions_contiguous"]
    assert check.blocking and check.metadata["sample"].value == "NYSE:GAP"
    assert check.metadata["violations"].value == 1


def test_bounds_in_utc_fails_on_local_time_bounds_and_blocks_the_publication(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # timestamptz cannot hold a local time, so the bad state is in what the op reads: bounds handed over in an
    # exchange's local time would reach symbols.parquet as such.
    read_symbols = catalog_store.read_symbols
    monkeypatch.setattr(
        catalog_store,
        "read_symbols",
        lambda c: read_symbols(c).with_columns(
            pl.col("valid_from", "valid_until").dt.convert_time_zone("America/New_York")
        ),
    )
    failed = _blocked(platform, _load_blocked(platform, tmp_path), conn)
    assert set(failed) == {"bounds_in_utc"}
    check = failed["bounds_in_utc"]
    assert check.blocking
    assert check.metadata["sample"].value == "valid_from (America/New_York), valid_until (America/New_York)"


# --- core_energy ---------------------------------------------------------------------------------------------------


def _observe(conn: psycopg.Connection, rows: list[tuple[str, date]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into core_energy.fact_series_value (series_code, obs_date, value) values (%s, %s, 1.0)", rows
        )


def _series_codes(conn: psycopg.Connection) -> list[str]:
    return [code for (code,) in conn.execute("select series_code from core_energy.dim_series order by 1")]


def test_every_series_observed_fails_on_a_described_series_without_observations(
    platform: Platform, conn: psycopg.Connection
) -> None:
    platform.materialize(DIM_SERIES)  # seeded with the eight series of the file
    today = datetime.now(UTC).date()
    _observe(conn, [(code, today) for code in _series_codes(conn) if code != "DGS30"])
    evaluation = _evaluate(platform, FACT_SERIES_VALUE, "every_series_observed")
    assert not evaluation.passed and evaluation.severity == WARN
    assert evaluation.metadata["without_observations"].value == "DGS30"
    assert evaluation.metadata["series"].value == 8


def test_series_fresh_fails_on_series_whose_newest_observation_is_too_old(
    platform: Platform, conn: psycopg.Connection
) -> None:
    platform.materialize(DIM_SERIES)
    today = datetime.now(UTC).date()
    old = {
        "UNRATE": date(2020, 1, 1),  # monthly: far beyond its 75 days
        "DGS10": today - timedelta(days=8),  # daily: one day beyond its 7
        "DGS2": today - timedelta(days=7),  # daily: just within
    }
    _observe(conn, [(code, old.get(code, today)) for code in _series_codes(conn)])
    evaluation = _evaluate(platform, FACT_SERIES_VALUE, "series_fresh")
    assert not evaluation.passed and evaluation.severity == WARN
    assert _listed(evaluation, "stale") == {f"DGS10 ({old['DGS10']})", "UNRATE (2020-01-01)"}


def test_model_col_valid_fails_on_invalid_model_cols_and_blocks_the_map_and_the_view(
    platform: Platform, conn: psycopg.Connection
) -> None:
    assert platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE).success
    mapped = conn.execute("select * from core_energy.map_model_series order by 1").fetchall()
    # A database without the format constraint (restored from before it, or dropped by hand) takes any name.
    conn.execute("alter table core_energy.dim_series drop constraint dim_series_model_col_format")
    conn.execute(
        "insert into core_energy.dim_series (model_col, series_code, freq) "
        "values ('Ust_10y', 'DGS1', 'D'), ('1y bill', 'DGS1MO', 'D')"
    )
    result = platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE, raise_on_error=False)
    assert not result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "model_col_valid"]
    assert not evaluation.passed and evaluation.blocking and evaluation.severity == ERROR
    assert _listed(evaluation, "invalid") == {"Ust_10y", "1y bill"}
    assert evaluation.metadata["duplicated"].value == "ust_10y"  # Ust_10y and ust_10y, case-insensitively
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert not materialized & {MAP_MODEL_SERIES, V_SERIES_WIDE}
    assert conn.execute("select * from core_energy.map_model_series order by 1").fetchall() == mapped
    view_columns = [d.name for d in conn.execute("select * from core_energy.v_series_wide limit 0").description]
    assert "Ust_10y" not in view_columns and "1y bill" not in view_columns


def test_view_columns_match_fails_on_a_view_out_of_step_with_the_map(
    platform: Platform, conn: psycopg.Connection
) -> None:
    assert platform.materialize(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE).success
    # The view dropped and recreated by hand: ust_5y left out, a column no series describes added.
    columns = [
        sql.SQL("max(f.value) filter (where m.model_col = {}) as {}").format(sql.Literal(c), sql.Identifier(c))
        for (c,) in conn.execute("select model_col from core_energy.map_model_series where model_col <> 'ust_5y'")
    ]
    conn.execute("drop view core_energy.v_series_wide cascade")
    conn.execute(
        sql.SQL(
            "create view core_energy.v_series_wide as select f.obs_date as date, {}, null::float8 as ust_7y "
            "from core_energy.fact_series_value f join core_energy.map_model_series m using (series_code) "
            "group by f.obs_date"
        ).format(sql.SQL(", ").join(columns))
    )
    evaluation = _evaluate(platform, V_SERIES_WIDE, "view_columns_match")
    assert not evaluation.passed and evaluation.blocking and evaluation.severity == ERROR
    assert evaluation.metadata["missing_in_view"].value == "ust_5y"
    assert evaluation.metadata["not_in_dim_series"].value == "ust_7y"
    assert evaluation.metadata["columns"].value == 8
