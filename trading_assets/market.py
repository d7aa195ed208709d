"""Reads for research and backtests: prices and daily bars as the platform knew them at a time, and prices
adjusted for corporate actions (per security, across its ticker changes).

    from trading_assets import market
    market.prices(["SPY"], "2020-01-01", "2020-12-31", as_known_at="2021-01-04T21:00Z")  # revisions after: unseen
    market.daily_bars(["SPY"], as_known_at="2021-01-04T21:00Z")       # bars rebuilt from the prices known then
    market.adjusted_daily_bars(["GOOGL"], adjustment="total_return")    # the view market.price_bars_1d_adjusted
    market.adjusted_bars(["AAPL"], "1M_CAL", adjustment="split")        # a multi-day family on adjusted prices
    market.adjusted_emas(["AAPL"], [10, 50], adjustment="split")        # EMAs of adjusted closes (or of a family)

Dates (`start`, `end`) are inclusive trading dates: dates or ISO strings. `as_known_at` is a point in time (as
`catalog.get_instrument`'s `as_of`); without it the current state is read. Bars as known at a time are not stored:
they are rebuilt from the price history held then, by the code that builds the stored ones.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.catalog import to_utc
from trading_assets.compute.bars import calendar_bars, daily_bars_of_history, multi_tf_bars
from trading_assets.compute.calendars import Timeframe, session_table
from trading_assets.compute.ema import dual_ema, ema
from trading_assets.config import Settings
from trading_assets.io.database import ready_database_url
from trading_assets.io.postgres import connect, read_frame
from trading_assets.sources import price_files

ADJUSTMENTS = ("split", "total_return")
# Known at the end of time: the current state.
_CURRENT = datetime.max.replace(tzinfo=UTC)
_UTC_TIME = pl.Datetime("us", "UTC")
# The rows of market.price_histories_as_known_at: the loaded price rows with when each was recorded.
_PRICE_SCHEMA = {
    "asset_id": pl.Int64,
    **{("source_line" if name == "line" else name): dtype for name, dtype in price_files.PRICE_SCHEMA.items()},
    "known_from": _UTC_TIME,
}
DAILY_BAR_SCHEMA = {
    "symbol": pl.String,
    **{k: v for k, v in _PRICE_SCHEMA.items() if k in ("asset_id", "trade_date")},
    "bar_seq": pl.Int64,
    **{k: pl.Float64 for k in ("open", "high", "low", "close", "volume")},
    "time_open_bar": _UTC_TIME,
    "time_close_bar": _UTC_TIME,
    "repaired_high": pl.Boolean,
    "repaired_low": pl.Boolean,
    "is_missing_days": pl.Boolean,
    "count_missing_days": pl.Int64,
}
_ADJUSTED_SCHEMA = {
    "security": pl.String,
    "trade_date": pl.Date,
    "symbol": pl.String,
    "asset_id": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "factor": pl.Float64,
    "raw_close": pl.Float64,
}


def _day(value: date | str | None) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _connection(settings: Settings | None) -> psycopg.Connection:
    settings = settings or Settings.from_env()
    return connect(ready_database_url(settings.database_url, settings.embedded_pgdata))


def _assets(conn: psycopg.Connection, symbols: list[str]) -> pl.DataFrame:
    """asset_id, symbol, calendar, timezone of `symbols`; ValueError naming the unknown ones."""
    found = read_frame(
        conn,
        sql.SQL(
            "select asset_id, symbol, calendar, timezone from market.dim_assets where symbol = any({}) "
            "order by asset_id"
        ).format(sql.Literal(symbols)),
        schema={"asset_id": pl.Int64, "symbol": pl.String, "calendar": pl.String, "timezone": pl.String},
    )
    if unknown := sorted(set(symbols) - set(found["symbol"])):
        raise ValueError(f"unknown market symbol(s): {', '.join(unknown)} (market.dim_assets)")
    return found


def _known_prices(
    conn: psycopg.Connection, asset_ids: list[int], known_at: datetime, start: date | None, end: date | None
) -> pl.DataFrame:
    query = sql.SQL(
        "select * from market.price_histories_as_known_at({}, {}, {}, {}) order by asset_id, trade_date"
    ).format(*map(sql.Literal, (known_at, asset_ids, start, end)))
    return read_frame(conn, query, schema=_PRICE_SCHEMA)


def _known_at(as_known_at: Any) -> datetime:
    return _CURRENT if as_known_at is None else to_utc(as_known_at)


def prices(
    symbols: list[str],
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    as_known_at: Any = None,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Price rows of `symbols` as held at `as_known_at` (default: now), with `known_from`, when each row's
    values were recorded."""
    with _connection(settings) as conn:
        assets = _assets(conn, symbols)
        known = _known_prices(conn, assets["asset_id"].to_list(), _known_at(as_known_at), _day(start), _day(end))
    return known.join(assets.select("asset_id", "symbol"), on="asset_id").select("symbol", *_PRICE_SCHEMA)


def daily_bars(
    symbols: list[str],
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    as_known_at: Any = None,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Daily bars of `symbols` (DAILY_BAR_SCHEMA): the stored ones, or with `as_known_at` the ones the bar build
    makes of the price history held then (each asset's whole history up to `end` is read: positions and gaps
    count from its first row)."""
    start, end = _day(start), _day(end)
    with _connection(settings) as conn:
        assets = _assets(conn, symbols)
        ids = assets["asset_id"].to_list()
        if as_known_at is None:
            stored = {k: v for k, v in DAILY_BAR_SCHEMA.items() if k != "symbol"}
            bars = read_frame(
                conn,
                sql.SQL(
                    "select {} from market.price_bars_1d where asset_id = any({}) and trade_date >= {} "
                    "and trade_date <= {} order by asset_id, trade_date"
                ).format(
                    sql.SQL(", ").join(map(sql.Identifier, stored)),
                    sql.Literal(ids),
                    sql.Literal(start or date.min),
                    sql.Literal(end or date.max),
                ),
                schema=stored,
            )
        else:
            known = _known_prices(conn, ids, _known_at(as_known_at), None, end)
            bars = daily_bars_of_history(known.drop("ts", "known_from"), assets)
    bars = bars.join(assets.select("asset_id", "symbol"), on="asset_id")
    window = pl.col("trade_date").is_between(start or date.min, end or date.max)
    return bars.filter(window).select([pl.col(k).cast(v) for k, v in DAILY_BAR_SCHEMA.items()])


def adjusted_daily_bars(
    securities: list[str],
    adjustment: str = "split",
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Daily bars of `securities` (permanent tickers, e.g. GOOGL) adjusted for splits ('split') or for splits
    and dividends ('total_return'), across ticker changes: `symbol` is the one valid on each date."""
    if adjustment not in ADJUSTMENTS:
        raise ValueError(f"adjustment {adjustment!r} is not one of {', '.join(ADJUSTMENTS)}")
    with _connection(settings) as conn:
        query = sql.SQL(
            "select {}, a.calendar from market.price_bars_1d_adjusted v join market.dim_assets a using (asset_id) "
            "where v.security = any({}) and v.adjustment = {} and v.trade_date between {} and {} "
            "order by v.security, v.trade_date"
        ).format(
            sql.SQL(", ").join(sql.SQL("v.") + sql.Identifier(c) for c in _ADJUSTED_SCHEMA),
            sql.Literal(securities),
            sql.Literal(adjustment),
            sql.Literal(_day(start) or date.min),
            sql.Literal(_day(end) or date.max),
        )
        bars = read_frame(conn, query, schema={**_ADJUSTED_SCHEMA, "calendar": pl.String})
    if unknown := sorted(set(securities) - set(bars["security"])):
        raise ValueError(f"no adjusted bars for security(ies) {', '.join(unknown)} (catalog.ticker_history)")
    return bars


def adjusted_bars(
    securities: list[str],
    tf: str,
    adjustment: str = "split",
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Snapshot rows of timeframe `tf` (7D, 1W_CAL_ISO, 1M_CAL, 3M_CAL_ANCHOR, ...) built on the adjusted daily
    bars of `securities` by the multi-day families' own code: computed on demand over each whole history
    (a few milliseconds a security), so a new split needs nothing rebuilt."""
    timeframe = Timeframe.parse(tf)
    daily = adjusted_daily_bars(securities, adjustment, None, end, settings=settings)
    return _family_rows(daily, timeframe).filter(
        pl.col("trade_date").is_between(_day(start) or date.min, _day(end) or date.max)
    )


def _security_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """A number per security of `frame`, as `asset_id`: the key the bar and EMA builders group by."""
    return frame.select("security").unique(maintain_order=True).with_row_index("asset_id").cast({"asset_id": pl.Int64})


def _family_rows(daily: pl.DataFrame, timeframe: Timeframe) -> pl.DataFrame:
    """The multi-day snapshot rows of `timeframe` over whole adjusted daily histories, keyed by security."""
    keys = _security_keys(daily)
    # A security's calendar is the one of the asset it trades as last (a ticker change keeps the exchange's).
    frame = (
        daily.drop("asset_id")
        .join(keys, on="security")
        .sort("asset_id", "trade_date")
        .with_columns(
            calendar=pl.col("calendar").last().over("asset_id"),
            row_index=pl.int_range(pl.len(), dtype=pl.Int64).over("asset_id"),
            first_trade_date=pl.col("trade_date").min().over("asset_id"),
        )
    )
    if frame.is_empty():
        return frame.select("security", "trade_date")
    years = timeframe.n if timeframe.unit == "Y" else 1
    sessions = session_table(
        frame["calendar"].unique().to_list(),
        date(frame["trade_date"].min().year - years - 1, 1, 1),
        date(frame["trade_date"].max().year + years + 1, 12, 31),
    )
    build = multi_tf_bars if timeframe.unit == "D" else calendar_bars
    return (
        build(frame, timeframe, sessions)
        .join(keys, on="asset_id")
        .drop("asset_id")
        .select("security", pl.exclude("security"))
    )


def adjusted_emas(
    securities: list[str],
    periods: list[int],
    adjustment: str = "split",
    tf: str = "1D",
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """EMAs of adjusted closes of `securities`, one column `ema_<p>` per period: of the daily closes (tf 1D),
    or the dual EMA of a multi-day timeframe (`ema_<p>` and `ema_bar_<p>`, as the stored EMA families)."""
    daily = adjusted_daily_bars(securities, adjustment, None, end, settings=settings)
    window = pl.col("trade_date").is_between(_day(start) or date.min, _day(end) or date.max)
    if tf == "1D":
        lengths = daily.group_by("security", maintain_order=True).len()["len"].to_list()
        emas = daily.select("security", "trade_date", "close").with_columns(
            ema(daily["close"], p, lengths).alias(f"ema_{p}") for p in periods
        )
        return emas.filter(window)
    timeframe = Timeframe.parse(tf)
    rows = _family_rows(daily, timeframe)
    keys = _security_keys(rows)
    grid = (
        rows.join(keys, on="security")
        .select("asset_id", "tf", "trade_date", "close", canonical=~pl.col("is_partial_end"))
        .sort("asset_id", "trade_date")
    )
    wide = dual_ema(grid, timeframe.nominal_days, periods)
    return wide.join(keys, on="asset_id").drop("asset_id").select("security", pl.exclude("security")).filter(window)
