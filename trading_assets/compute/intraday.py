"""Multi-resolution bars from minute bars, anchored to the exchange session.

Sessions come from the exchange calendar (open and close per date, early closes included): NSE opens 09:15
Asia/Kolkata, XNYS 09:30 America/New_York. A minute outside its session (pre-open, after the close) is kept as a
1min row marked `in_session = false` and never lands in a bar of another resolution, so nothing before the open
shares a bar with it. A bar of resolution r starts at open + k*r and ends at the earlier of its start + r and the
close: the day's last bar closes at the session end. A bar is written once its window has closed by the clock of
the data (the end of the newest minute seen on its exchange), not when a later minute arrives; the 1D bar spans the
session. OHLC: first open, highest high, lowest low, last close; volume summed; vwap the volume-weighted mean of
the minutes' vwap (their close where the source has none); trade_count the minutes' trade counts (else the
minutes); oi the last, oi_change last minus first.
"""

from datetime import date, datetime, timedelta

import polars as pl

from trading_assets.compute.calendars import exchange_calendar, exchange_date

RESOLUTION_MINUTES = {"1min": 1, "5min": 5, "15min": 15, "1h": 60}
DAILY = "1D"
MINUTE_SCHEMA = {
    "exchange": pl.String,
    "symbol": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "vwap": pl.Float64,
    "trade_count": pl.Int64,
    "oi": pl.Int64,
}
SESSION_SCHEMA = {
    "exchange": pl.String,
    "trade_date": pl.Date,
    "open_at": pl.Datetime("us", "UTC"),
    "close_at": pl.Datetime("us", "UTC"),
}
BAR_SCHEMA = {
    "trade_date": pl.Date,
    "bar_start": pl.Datetime("us", "UTC"),
    "exchange": pl.String,
    "symbol": pl.String,
    "resolution": pl.String,
    "bar_end": pl.Datetime("us", "UTC"),
    "in_session": pl.Boolean,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "vwap": pl.Float64,
    "trade_count": pl.Int64,
    "oi": pl.Int64,
    "oi_change": pl.Int64,
}


def sessions(exchanges: list[str], first: date, last: date) -> pl.DataFrame:
    """SESSION_SCHEMA: every session of each exchange from `first` to `last`, open and close in UTC."""
    frames = []
    for exchange in sorted(set(exchanges)):
        calendar = exchange_calendar(exchange)
        lo, hi = max(first, calendar.first_session.date()), min(last, calendar.last_session.date())
        schedule = calendar.schedule.loc[lo.isoformat() : hi.isoformat()]
        frames.append(
            pl.DataFrame(
                {
                    "exchange": exchange,
                    "trade_date": [d.date() for d in schedule.index],
                    "open_at": list(schedule["open"].dt.to_pydatetime()),
                    "close_at": list(schedule["close"].dt.to_pydatetime()),
                }
            )
        )
    return pl.concat([pl.DataFrame(schema=SESSION_SCHEMA), *(f.cast(SESSION_SCHEMA) for f in frames)])


def minute_rows(minutes: pl.DataFrame, calendar: pl.DataFrame) -> pl.DataFrame:
    """The minutes as 1min rows (BAR_SCHEMA) on their session's date (a minute of a day without a session goes
    with the next session), `in_session` when it starts at or after the open and ends by the close."""
    placed = (
        minutes.with_columns(local_date=exchange_date(pl.col("ts"), pl.col("exchange")))
        .sort("local_date")
        .join_asof(
            calendar.sort("trade_date").with_columns(key=pl.col("trade_date")),
            left_on="local_date",
            right_on="key",
            by="exchange",
            strategy="forward",
            check_sortedness=False,  # sorted by date above; polars cannot verify it within groups
        )
    )
    # Where each minute came from, when the input says.
    sources = [c for c in ("source_file", "source_line") if c in minutes.columns]
    return placed.filter(pl.col("trade_date").is_not_null()).select(
        "trade_date",
        *sources,
        bar_start="ts",
        exchange="exchange",
        symbol="symbol",
        resolution=pl.lit("1min"),
        bar_end=pl.col("ts") + pl.duration(minutes=1),
        in_session=(pl.col("ts") >= pl.col("open_at")) & (pl.col("ts") + pl.duration(minutes=1) <= pl.col("close_at")),
        open="open",
        high="high",
        low="low",
        close="close",
        volume="volume",
        vwap=pl.coalesce("vwap", "close"),
        trade_count=pl.coalesce("trade_count", pl.lit(1, pl.Int64)),
        oi="oi",
        oi_change=pl.lit(None, pl.Int64),
    )


def roll_up(rows: pl.DataFrame, calendar: pl.DataFrame, clocks: dict[str, datetime]) -> pl.DataFrame:
    """Bars of every resolution above 1min (BAR_SCHEMA) from the in-session 1min `rows`, only those whose window
    has closed by their exchange's clock in `clocks` (the end of its newest minute)."""
    minutes = rows.filter(pl.col("in_session")).join(
        calendar.select("exchange", "trade_date", "open_at", "close_at"), on=["exchange", "trade_date"]
    )
    clock = pl.DataFrame(
        {"exchange": list(clocks), "clock": list(clocks.values())},
        schema={"exchange": pl.String, "clock": pl.Datetime("us", "UTC")},
    )
    frames = []
    windows = {name: timedelta(minutes=m) for name, m in RESOLUTION_MINUTES.items() if name != "1min"}
    for name, width in [*windows.items(), (DAILY, None)]:
        if width is None:
            start, end = pl.col("open_at"), pl.col("close_at")
        else:
            step = pl.duration(microseconds=int(width.total_seconds() * 1_000_000))
            index = (pl.col("bar_start") - pl.col("open_at")).dt.total_microseconds() // int(
                width.total_seconds() * 1_000_000
            )
            start = pl.col("open_at") + step * index
            end = pl.min_horizontal(start + step, pl.col("close_at"))
        frames.append(
            minutes.with_columns(window_start=start, window_end=end)
            .sort("bar_start")
            .group_by("exchange", "symbol", "trade_date", "window_start", maintain_order=True)
            .agg(
                bar_end=pl.col("window_end").first(),
                open=pl.col("open").first(),
                high=pl.col("high").max(),
                low=pl.col("low").min(),
                close=pl.col("close").last(),
                volume=pl.col("volume").sum(),
                vwap=(pl.col("vwap") * pl.col("volume")).sum() / pl.col("volume").sum(),
                last_close=pl.col("close").last(),
                trade_count=pl.col("trade_count").sum(),
                oi=pl.col("oi").drop_nulls().last(),
                oi_change=pl.col("oi").drop_nulls().last() - pl.col("oi").drop_nulls().first(),
            )
            .with_columns(resolution=pl.lit(name))
        )
    bars = pl.concat(frames).join(clock, on="exchange", how="left")
    return (
        bars.filter(pl.col("bar_end") <= pl.col("clock"))
        .with_columns(
            # No volume in the window: the vwap is the close.
            vwap=pl.when(pl.col("vwap").is_finite()).then("vwap").otherwise("last_close"),
            in_session=pl.lit(True),
        )
        .rename({"window_start": "bar_start"})
        .select([pl.col(n).cast(t) for n, t in BAR_SCHEMA.items()])
    )
