"""The VIX term structure per trading date: from VX futures, or from the index alone where none trade.

Front and next are the two listed contracts nearest to expiry that settled that day and expire after it: on
its expiry date a contract is no longer the front (the roll happens on the expiry date). contango_pct is
(next - front) / front * 100, positive in contango and negative in backwardation. roll_yield_pct is that slope
per 30 days between the two expiries: what a position rolled down the curve gains or loses a month. Realized
volatility is the standard deviation of the index's daily log returns over the last 5 and 20 sessions of the
exchange calendar, times sqrt(252) * 100; a window with a missing session has none (sessions are dates, not rows).
"""

import math
from datetime import date, timedelta

import polars as pl

from trading_assets.compute.calendars import last_session_before, session_table
from trading_assets.compute.validation import rows_in_window

CURVE_POINTS = 8
VOL_WINDOWS = (5, 20)
TERM_SCHEMA = {
    "trade_date": pl.Date,
    "exchange": pl.String,
    "source": pl.String,
    "vix_spot": pl.Float64,
    "front_contract": pl.String,
    "front_expiry": pl.Date,
    "front_price": pl.Float64,
    "next_contract": pl.String,
    "next_expiry": pl.Date,
    "next_price": pl.Float64,
    "curve": pl.List(pl.Float64),
    "contango_pct": pl.Float64,
    "roll_yield_pct": pl.Float64,
    "realized_vol_5d": pl.Float64,
    "realized_vol_20d": pl.Float64,
}


def _on_or_before_session(day: date, calendar: str) -> date:
    found = last_session_before(calendar, day + timedelta(days=1))
    assert found is not None, f"{calendar} has no session in the month before {day}"
    return found


def vx_expiry(contract_month: date, calendar: str = "XNYS") -> date:
    """CFE's final settlement date of the VX contract of `contract_month`: the Wednesday 30 days before the
    third Friday of the following month (that Friday a holiday: 30 days before the session preceding it), moved
    to the session before when the Wednesday itself is a holiday."""
    following = (contract_month.replace(day=28) + timedelta(days=4)).replace(day=1)
    third_friday = following + timedelta(days=(4 - following.weekday()) % 7 + 14)
    return _on_or_before_session(_on_or_before_session(third_friday, calendar) - timedelta(days=30), calendar)


def realized_vol(closes: pl.DataFrame, calendar: str) -> pl.DataFrame:
    """(trade_date, realized_vol_5d, realized_vol_20d) on every session of `calendar` spanned by `closes`
    (trade_date, index_close)."""
    known = closes.drop_nulls("index_close")
    if known.is_empty():
        return pl.DataFrame(schema={"trade_date": pl.Date, **{f"realized_vol_{n}d": pl.Float64 for n in VOL_WINDOWS}})
    grid = (
        session_table([calendar], known["trade_date"].min(), known["trade_date"].max())
        .select(trade_date="session_date")
        .join(known.select("trade_date", "index_close"), on="trade_date", how="left")
        .sort("trade_date")
    )
    returns = grid.with_columns(log_return=(pl.col("index_close") / pl.col("index_close").shift(1)).log())
    return returns.select(
        "trade_date",
        *(
            (pl.col("log_return").rolling_std(n, min_samples=n) * math.sqrt(252) * 100).alias(f"realized_vol_{n}d")
            for n in VOL_WINDOWS
        ),
    )


def _contract_label(month: pl.Expr) -> pl.Expr:
    return pl.lit("VX ") + month.dt.strftime("%Y-%m")


def term_structure(contracts: pl.DataFrame, spot: pl.DataFrame, first: date | None, end: date) -> pl.DataFrame:
    """TERM_SCHEMA rows of CFE for each date in [first, end) with a settled contract, from `contracts`
    (trade_date, contract_month, settle) and `spot` (trade_date, vix, index_close, reaching 30 sessions before
    `first` for the realized volatility)."""
    months = contracts["contract_month"].unique().sort().to_list()
    expiries = pl.DataFrame(
        {"contract_month": months, "expiry": [vx_expiry(m) for m in months]},
        schema={"contract_month": pl.Date, "expiry": pl.Date},
    )
    in_window = rows_in_window(contracts, "trade_date", first, end)
    curve = (
        in_window.join(expiries, on="contract_month")
        .filter(pl.col("expiry") > pl.col("trade_date"))
        .sort("trade_date", "expiry")
        .group_by("trade_date", maintain_order=True)
        .agg(
            front_contract=_contract_label(pl.col("contract_month").first()),
            front_expiry=pl.col("expiry").first(),
            front_price=pl.col("settle").first(),
            next_contract=_contract_label(pl.col("contract_month").get(1, null_on_oob=True)),
            next_expiry=pl.col("expiry").get(1, null_on_oob=True),
            next_price=pl.col("settle").get(1, null_on_oob=True),
            curve=pl.col("settle").head(CURVE_POINTS),
        )
    )
    slope = (pl.col("next_price") - pl.col("front_price")) / pl.col("front_price") * 100
    return (
        curve.join(spot.select("trade_date", vix_spot="vix"), on="trade_date", how="left")
        .join(realized_vol(spot, "XNYS"), on="trade_date", how="left")
        .with_columns(
            exchange=pl.lit("CFE"),
            source=pl.lit("vx_futures"),
            contango_pct=slope,
            roll_yield_pct=slope * 30 / (pl.col("next_expiry") - pl.col("front_expiry")).dt.total_days(),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in TERM_SCHEMA.items()])
        .sort("trade_date")
    )


def india_vix_fallback(spot: pl.DataFrame, first: date | None, end: date, calendar: str = "XBOM") -> pl.DataFrame:
    """TERM_SCHEMA rows of NSE where India VIX has no futures: the front is the index itself and the next its
    mean over the last 5 sessions (20 when a 5-session window has a gap, else the index again), so contango_pct
    keeps its sign: positive when the index sits below its recent mean, as a curve in contango does."""
    grid = (
        session_table([calendar], spot["trade_date"].min(), spot["trade_date"].max())
        .select(trade_date="session_date")
        .join(spot.select("trade_date", "vix"), on="trade_date", how="left")
        .sort("trade_date")
        .with_columns(
            ma_5=pl.col("vix").rolling_mean(5, min_samples=5), ma_20=pl.col("vix").rolling_mean(20, min_samples=20)
        )
    )
    rows = (
        rows_in_window(grid.drop_nulls("vix"), "trade_date", first, end)
        .join(realized_vol(spot, calendar), on="trade_date", how="left")
        .with_columns(next_price=pl.coalesce("ma_5", "ma_20", "vix"))
    )
    slope = (pl.col("next_price") - pl.col("vix")) / pl.col("vix") * 100
    return rows.with_columns(
        exchange=pl.lit("NSE"),
        source=pl.lit("india_vix_fallback"),
        vix_spot="vix",
        front_price="vix",
        contango_pct=slope,
        curve=pl.concat_list("vix", "next_price"),
        **{name: pl.lit(None) for name in ("front_contract", "front_expiry", "next_contract", "next_expiry")},
        roll_yield_pct=pl.lit(None),
    ).select([pl.col(name).cast(dtype) for name, dtype in TERM_SCHEMA.items()])
