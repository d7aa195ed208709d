"""Corporate actions from Lean's real factor and map files: adjusted prices against the factor-file rule applied
independently here, split days without jumps, ticker changes joining histories, the checks, and bad files."""

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
import psycopg
import pytest

from trading_assets import catalog, market
from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.corporate_actions import (
    ADJUSTED_BARS,
    CORPORATE_ACTIONS,
    REFERENCE_CHECKS,
    TICKER_HISTORY,
    reference_folder,
)
from trading_assets.errors import InputError
from trading_assets.sources.lean_reference import read_factor_file, read_map_file
from trading_assets_tests.conftest import SHARED_DATA, Platform, database_copy

LEAN = SHARED_DATA / "reference" / "lean"
DAILY = SHARED_DATA / "daily"
needs_shared = pytest.mark.skipif(not LEAN.exists(), reason="../shared/data is not beside the project")
pytestmark = needs_shared
# The Lean equity daily files: ticker -> file (prices x 10000, New York dates).
EQUITY_FILES = {
    path.name.removeprefix("lean_equity_usa_").removesuffix("_1d.csv").upper(): path
    for path in sorted(DAILY.glob("lean_equity_usa_*_1d.csv"))
}
REFERENCE = dg.AssetSelection.assets(CORPORATE_ACTIONS, TICKER_HISTORY, ADJUSTED_BARS)


def _spec(ticker: str) -> dict:
    return {
        "path": str(EQUITY_FILES[ticker]),
        "symbol": ticker,
        "price_divisor": 10000.0,
        "calendar": "XNYS",
        "timezone": "America/New_York",
    }


def _land_reference(settings: Settings) -> Path:
    target = reference_folder(settings)
    for kind in ("factor_files", "map_files"):
        shutil.copytree(LEAN / kind, target / kind, dirs_exist_ok=True)
    return target


def _load(platform: Platform, tickers: list[str]) -> None:
    platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=("2019-01-01", "2021-03-01"),  # the first partition holds every earlier date too
        ops={"market__price_histories": {"files": [_spec(t) for t in tickers]}},
    )
    platform.run(dg.AssetSelection.assets(BAR_KEYS["1d"]) - TABLE_CHECKS, partition_range=("2019-01-01", "2021-03-01"))


@dataclass
class Loaded:
    url: str
    settings: Settings
    checks: dict[str, dg.AssetCheckEvaluation]


@pytest.fixture(scope="module")
def loaded(server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """Every Lean equity daily file, its bars, and the real factor and map files, loaded once."""
    home = tmp_path_factory.mktemp("corporate_actions")
    with database_copy(server_url, template_database) as url, pytest.MonkeyPatch.context() as env:
        config = home / "dim_series.csv"
        shutil.copy(PROJECT_ROOT / "config" / "dim_series.csv", config)
        env.setenv("TRADING_ASSETS_HOME", str(home / "home"))
        env.setenv("TRADING_ASSETS_DATABASE_URL", url)
        env.setenv("TRADING_ASSETS_SERIES_CONFIG", str(config))
        env.setenv("TRADING_ASSETS_START_DATE", "2019-01-01")
        env.delenv("DAGSTER_PG_URL", raising=False)
        settings = Settings.from_env()
        with dg.DagsterInstance.ephemeral() as instance:
            platform = Platform(settings, instance)
            _land_reference(settings)
            _load(platform, list(EQUITY_FILES))
            platform.run(REFERENCE - TABLE_CHECKS)
            result = platform.run(dg.AssetSelection.checks(*REFERENCE_CHECKS))
            checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
            yield Loaded(url, settings, checks)


# ---------------------------------------------------------------------------------------------------------------
# The factor-file rule, written here from Lean's description, apart from the platform's code.


def _lean_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines() if line.strip()]


def _day(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def _ticker_spans(security: str) -> list[tuple[date, date, str]]:
    """(first, last, ticker) of a map file: a row's ticker holds up to its date, from the day after the previous
    row's date (the first row: its own date)."""
    rows = _lean_rows(LEAN / "map_files" / f"{security.lower()}.csv")
    spans, previous = [], None
    for fields in rows:
        day = _day(fields[0])
        spans.append((day if previous is None else previous + timedelta(days=1), day, fields[1].upper()))
        previous = day
    return spans


def _factor_on(security: str, day: date) -> tuple[float, float]:
    """(price_factor, split_factor) of the first factor row dated on or after `day`; (1, 1) after the last."""
    for fields in _lean_rows(LEAN / "factor_files" / f"{security.lower()}.csv"):
        if _day(fields[0]) >= day:
            return float(fields[1]), float(fields[2])
    return 1.0, 1.0


def _raw_closes(ticker: str) -> dict[date, float]:
    return {_day(f[0][:8]): float(f[4]) / 10000 for f in _lean_rows(EQUITY_FILES[ticker])}


def _securities_with_factor_files() -> list[str]:
    """The securities of the equity files that have a factor file: a map file naming one of their tickers."""
    found = []
    for path in sorted((LEAN / "factor_files").glob("*.csv")):
        security = path.name.removesuffix(".csv").upper()
        map_file = LEAN / "map_files" / path.name
        if map_file.exists() and any(t in EQUITY_FILES for _, _, t in _ticker_spans(security)):
            found.append(security)
    return found


def _expected(security: str) -> pd.DataFrame:
    rows = []
    for first, last, ticker in _ticker_spans(security):
        if ticker not in EQUITY_FILES:
            continue
        for day, close in _raw_closes(ticker).items():
            if first <= day <= last:
                price_factor, split_factor = _factor_on(security, day)
                rows.append((day, ticker, close * split_factor, close * split_factor * price_factor))
    return pd.DataFrame(rows, columns=["trade_date", "ticker", "split", "total_return"]).sort_values("trade_date")


def test_every_equity_with_a_factor_file_is_covered() -> None:
    assert _securities_with_factor_files() == [
        "AAA.1", "AAPL", "AIG", "BNO", "EEM", "FB", "GOOG", "GOOGL", "IWM", "SPY"
    ]  # fmt: skip


def test_adjusted_closes_follow_the_factor_file_rule(loaded: Loaded) -> None:
    for security in _securities_with_factor_files():
        expected = _expected(security)
        for adjustment in ("split", "total_return"):
            got = market.adjusted_daily_bars([security], adjustment, settings=loaded.settings)
            assert got["trade_date"].to_list() == expected["trade_date"].tolist(), (security, adjustment)
            relative = abs(got["close"].to_numpy() / expected[adjustment].to_numpy() - 1)
            assert relative.max() <= 1e-9, (security, adjustment, relative.max())
    # The dividend factor really differs from 1 somewhere: total return is not the split series again.
    spy = market.adjusted_daily_bars(["SPY"], "total_return", settings=loaded.settings)
    assert spy["factor"].min() < 0.7


def _split_days() -> list[tuple[str, date, float]]:
    """(security, last date before the split, ratio) of every split in the factor files of the equities."""
    found = []
    for security in _securities_with_factor_files():
        rows = _lean_rows(LEAN / "factor_files" / f"{security.lower()}.csv")
        for before, after in itertools.pairwise(rows):
            if float(after[2]) != float(before[2]):
                found.append((security, _day(before[0]), float(after[2]) / float(before[2])))
    return found


def test_split_days_show_no_jump_in_the_split_adjusted_series(loaded: Loaded) -> None:
    judged = 0
    for security, last_before, ratio in _split_days():
        bars = market.adjusted_daily_bars([security], "split", settings=loaded.settings)
        before = bars.filter(pl.col("trade_date") <= last_before).tail(1)
        after = bars.filter(pl.col("trade_date") > last_before).head(1)
        if before.is_empty() or after.is_empty():
            continue
        judged += 1
        raw_move = after["raw_close"][0] / before["raw_close"][0]
        adjusted_move = after["close"][0] / before["close"][0]
        # The raw series moves by the ratio (a 2-for-1 halves the price); the adjusted one like any day. AIG's
        # 1-for-20 of 2009-07-01 fell 20% on the day in the data, so the bound is the split check's 25%.
        assert abs(raw_move * ratio - 1) < 0.25, (security, last_before, raw_move)
        assert abs(adjusted_move - 1) < 0.25, (security, last_before, adjusted_move)
        if abs(ratio - 1) > 0.2:
            assert abs(raw_move - 1) > 0.2, (security, last_before, raw_move)
    assert judged == 14  # AAPL x4, AIG x4, BNO, EEM x2, GOOG, GOOGL, IWM


def test_a_ticker_change_joins_the_histories_under_one_security(loaded: Loaded) -> None:
    googl = market.adjusted_daily_bars(["GOOGL"], "split", "2014-03-31", "2014-04-04", settings=loaded.settings)
    # Up to 2014-04-02 the class A shares traded as GOOG (the goog file), then as GOOGL (the googl file).
    assert googl.select("trade_date", "symbol").rows() == [
        (date(2014, 3, 31), "NASDAQ:GOOG"),
        (date(2014, 4, 1), "NASDAQ:GOOG"),
        (date(2014, 4, 2), "NASDAQ:GOOG"),
        (date(2014, 4, 3), "NASDAQ:GOOGL"),
        (date(2014, 4, 4), "NASDAQ:GOOGL"),
    ]
    closes = googl["close"].to_list()
    assert max(abs(b / a - 1) for a, b in itertools.pairwise(closes)) < 0.05
    # The class C security (GOOG since 2014-04-03) has none of the class A history the goog file holds before.
    goog = market.adjusted_daily_bars(["GOOG"], "split", settings=loaded.settings)
    assert goog["trade_date"].min() == date(2014, 4, 3)

    # The catalog answers with the symbol valid on the date asked, whichever of the security's symbols is asked.
    def symbol_then(symbol: str, day: str) -> str | None:
        found = catalog.get_instrument(symbol, as_of=day, settings=loaded.settings)
        return found and f"{found['symbol']} ({found['security']})"

    assert symbol_then("NASDAQ:GOOGL", "2010-06-01") == "NASDAQ:GOOG (GOOGL)"
    assert symbol_then("NASDAQ:GOOG", "2010-06-01") == "NASDAQ:GOOG (GOOGL)"
    assert symbol_then("NASDAQ:GOOG", "2020-06-01") == "NASDAQ:GOOG (GOOG)"
    assert symbol_then("NASDAQ:GOOGL", "2020-06-01") == "NASDAQ:GOOGL (GOOGL)"
    assert symbol_then("NYSE:TWX", "2000-01-03") == "NYSE:AOL (TWX)"
    assert symbol_then("NYSE:TWX", "2019-01-02") is None  # delisted 2018-06-15
    # The bars join answers with the catalog version of the symbol valid on each date.
    catalog.upsert_symbols([{"symbol": "NASDAQ:GOOG", "tick_size": 0.01}], "2004-08-19", settings=loaded.settings)
    catalog.upsert_symbols([{"symbol": "NASDAQ:GOOGL", "tick_size": 0.02}], "2014-04-03", settings=loaded.settings)
    with psycopg.connect(loaded.url) as conn:
        joined = conn.execute(
            "select trade_date::text, symbol, tick_size from catalog.security_bars_1d_with_symbol "
            "where security = 'GOOGL' and trade_date between '2014-04-02' and '2014-04-03' order by trade_date"
        ).fetchall()
    assert joined == [("2014-04-02", "NASDAQ:GOOG", 0.01), ("2014-04-03", "NASDAQ:GOOGL", 0.02)]
    with pytest.raises(ValueError, match=r"no adjusted bars for security.* TWX"):  # no AOL/TWX prices loaded
        market.adjusted_daily_bars(["TWX"], settings=loaded.settings)


def test_the_checks_pass_on_the_real_files_and_list_real_jumps(loaded: Loaded) -> None:
    for name in ("factors_positive", "factor_dates_ordered", "splits_match_price_jumps", "tickers_one_per_day"):
        assert loaded.checks[name].passed, (name, loaded.checks[name].metadata)
    jumps = loaded.checks["unexplained_price_jumps"]
    assert not jumps.passed and jumps.severity == dg.AssetCheckSeverity.WARN
    listed = jumps.metadata["candidates"].value
    assert "AIG" in listed and "2008-09-16" in listed  # the real crash, for a person to look at
    assert "2014-04-03" not in listed  # the GOOG/GOOGL change joined without a jump


def test_adjusted_multi_day_bars_and_emas_match_pandas(loaded: Loaded) -> None:
    daily = market.adjusted_daily_bars(["AAPL"], "split", settings=loaded.settings).to_pandas()
    daily.index = pd.to_datetime(daily["trade_date"])
    closes = daily["close"]
    reference = pd.DataFrame({"close": closes.resample("ME").last(), "high": daily["high"].resample("ME").max()})
    reference.index = reference.index.to_period("M")
    monthly = market.adjusted_bars(["AAPL"], "1M_CAL", "split", settings=loaded.settings)
    canonical = monthly.filter(~pl.col("is_partial_end")).to_pandas()
    canonical.index = pd.to_datetime(canonical["trade_date"]).dt.to_period("M")
    assert len(canonical) > 250  # 1998-2021: every month whose last session has a bar
    assert (canonical["close"] - reference.loc[canonical.index, "close"]).abs().max() < 1e-9
    assert (canonical["high"] - reference.loc[canonical.index, "high"]).abs().max() < 1e-9
    # August 2020 holds the 4-for-1 split of the 31st: its high is the adjusted one, not the raw $500.
    assert canonical.loc[pd.Period("2020-08", "M"), "high"] < 140
    # EMAs: seeded with the mean of the first p closes, then close * 2/(p+1) + previous * (1 - 2/(p+1)).
    daily_emas = market.adjusted_emas(["AAPL"], [10], "split", settings=loaded.settings)["ema_10"].to_numpy()
    assert pd.isna(daily_emas[:9]).all()
    assert abs(daily_emas[9:] / _sma_seeded_ema(closes.tolist(), 10) - 1).max() < 1e-12
    # On a multi-day timeframe, the bar EMA on each completed month runs over the completed months' closes.
    monthly_emas = market.adjusted_emas(["AAPL"], [3], "split", "1M_CAL", settings=loaded.settings)
    completed = monthly_emas.join(monthly.select("trade_date", "is_partial_end"), on="trade_date")
    completed = completed.filter(~pl.col("is_partial_end"))
    expected = _sma_seeded_ema(completed["close"].to_list(), 3)
    assert abs(completed["ema_bar_3"].to_numpy()[2:] / expected - 1).max() < 1e-12


def _sma_seeded_ema(values: list[float], period: int) -> list[float]:
    """From the period-th value on: the mean of the first `period`, then the usual recursion."""
    smoothing = 2 / (period + 1)
    found = [sum(values[:period]) / period]
    for value in values[period:]:
        found.append(smoothing * value + (1 - smoothing) * found[-1])
    return found


# ---------------------------------------------------------------------------------------------------------------
# Bad states and bad files.


@pytest.fixture
def aapl(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    _land_reference(platform.settings)
    _load(platform, ["AAPL"])
    platform.run(REFERENCE - TABLE_CHECKS)
    return platform


def _checks(platform: Platform) -> dict[str, dg.AssetCheckEvaluation]:
    result = platform.run(dg.AssetSelection.checks(*REFERENCE_CHECKS), raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "2019-01-01")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(Settings.from_env(), instance)


def test_each_check_fails_on_the_bad_state_it_exists_for(aapl: Platform, conn: psycopg.Connection) -> None:
    assert all(c.passed for name, c in _checks(aapl).items() if name != "unexplained_price_jumps")
    conn.execute("update market.corporate_actions set price_factor = -0.5 where security = 'AAPL' and source_line = 10")
    # The 2-for-1 split of 2005-02-28 forgotten: the row before it states the split factor of the row after it.
    # The split of 2000-06-21 then reads as 4-for-1, which its price jump does not match.
    conn.execute(
        "update market.corporate_actions set split_factor = 0.0357143 "
        "where security = 'AAPL' and factor_date = '2005-02-25'"
    )
    # A row whose date is no longer in the order of its line.
    conn.execute(
        "update market.corporate_actions set factor_date = '2013-06-01' "
        "where security = 'AAPL' and factor_date = '2013-02-06'"
    )
    conn.execute(
        "insert into catalog.ticker_history (security, valid_from, valid_until, ticker, exchange, source_file, "
        "source_line) values ('AAPL.1', '2010-01-01', '2011-01-01', 'AAPL', 'NASDAQ', 'edited by hand', 1)"
    )
    checks = _checks(aapl)
    assert not checks["factors_positive"].passed and checks["factors_positive"].metadata["rows"].value == 1
    assert not checks["factor_dates_ordered"].passed
    mismatched = checks["splits_match_price_jumps"]
    assert not mismatched.passed and "2000-06-21" in mismatched.metadata["sample"].value
    # The split-adjusted series now halves on 2005-02-28: listed as a candidate missing action.
    assert "2005-02-28" in checks["unexplained_price_jumps"].metadata["candidates"].value
    assert not checks["tickers_one_per_day"].passed


def test_loading_the_same_files_again_changes_nothing(aapl: Platform, conn: psycopg.Connection) -> None:
    loaded_at = (
        "select max(loaded_at) from market.corporate_actions "
        "union all select max(loaded_at) from catalog.ticker_history"
    )
    before = conn.execute(loaded_at).fetchall()
    again = aapl.run(REFERENCE - TABLE_CHECKS)
    changed = {
        e.asset_key.to_user_string(): e.materialization.metadata["securities_changed"].value
        for e in again.get_asset_materialization_events()
        if "securities_changed" in e.materialization.metadata
    }
    assert changed == {"market/corporate_actions": 0, "catalog/ticker_history": 0}  # FB.1, TWX.1 have no exchange
    assert conn.execute(loaded_at).fetchall() == before


def test_a_bad_factor_file_is_refused_by_file_and_line_and_the_table_kept(
    aapl: Platform, conn: psycopg.Connection
) -> None:
    before = conn.execute("select count(*), sum(split_factor) from market.corporate_actions").fetchone()
    bad = reference_folder(aapl.settings) / "factor_files" / "aig.csv"
    lines = bad.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",0.9,-1,30"  # a negative split factor
    lines[4], lines[5] = lines[5], lines[4]  # two dates out of order
    bad.write_text("\n".join(lines))
    result = aapl.run(dg.AssetSelection.assets(CORPORATE_ACTIONS) - TABLE_CHECKS, raise_on_error=False)
    assert not result.success
    message = str(result.failure_data_for_node("market__corporate_actions").error)
    assert "aig.csv, line 3: split_factor -1.0 is not positive and finite" in message
    assert "aig.csv, line 6: date" in message and "is not after the previous row's" in message
    assert conn.execute("select count(*), sum(split_factor) from market.corporate_actions").fetchone() == before


def test_reading_refuses_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("20100104,1,1,10\n2010-01-05,1,1,10\n20100106,1,1\n")
    with pytest.raises(InputError) as refused:
        read_factor_file(path)
    assert [(p.line, p.reason) for p in refused.value.problems] == [
        (2, "expected YYYYMMDD,price_factor,split_factor,reference_price"),
        (3, "expected YYYYMMDD,price_factor,split_factor,reference_price"),
    ]
    path.write_text("20100104,aapl,Q\n20100105,aapl,X\n")
    with pytest.raises(InputError, match=r"x.csv, line 2: unknown exchange code 'X'"):
        read_map_file(path)


def test_a_landed_or_changed_reference_file_requests_the_load(platform: Platform) -> None:
    sensor = next(s for s in platform.defs.sensors if s.name == "reference_files")

    def tick(cursor: str | None) -> dg.SensorResult | dg.SkipReason:
        return sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance, cursor=cursor))

    assert not tick(None).run_requests  # nothing landed
    folder = _land_reference(platform.settings)
    landed = tick(None)
    assert len(landed.run_requests) == 1 and sensor.job_name == "load_corporate_actions"
    assert not tick(landed.cursor).run_requests
    late = folder / "factor_files" / "aapl.csv"
    late.write_text(
        late.read_text().replace("20210204,0.9985079,1,137.39", "20210204,0.9985079,1,137.39\n20210505,1,1,130")
    )
    assert tick(landed.cursor).run_requests
