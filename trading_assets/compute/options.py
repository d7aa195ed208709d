"""Option-chain snapshots and the features of each snapshot, in polars.

A snapshot is every quote of one underlying at one instant. Nothing is skipped because open interest did not
change since the last one (the replaced tracker dropped such snapshots and their features with them).

Features per (ts, exchange, underlying):
- put/call ratios of open interest, volume and in-the-money open interest (a call is in the money below the
  underlying, a put above it), and the in-the-money open interest of each side;
- max pain of the nearest expiry: the strike at which the options of that expiry pay their holders least;
- ATM IV: the nearest expiry's call and put implied volatility at the strike nearest the underlying (their mean);
- IV skew: the 25-delta put's IV minus the 25-delta call's, nearest expiry, where the source has deltas; else
  the put at the strike nearest 95% of the underlying minus the call nearest 105% (`skew_method` says which).
  IVs below 0.01 are a source's placeholders for "none" and are ignored;
- open-interest change in percent of the total, over time, not rows: 5 and 20 sessions of the exchange calendar
  back for end-of-day chains, 3 and 15 minutes for intraday ones (the snapshot at or before that instant, at
  most a minute earlier); null when no snapshot was taken then.
"""

from datetime import timedelta

import polars as pl

from trading_assets.compute.calendars import EXCHANGE_CALENDARS, exchange_date, session_table

SNAPSHOT = ["ts", "exchange", "underlying"]
KEY = [*SNAPSHOT, "expiry", "strike", "option_type"]
PLACEHOLDER_IV = 0.01
EOD_SESSIONS = (5, 20)
INTRADAY_MINUTES = (3, 15)
# The columns of stored snapshots the features read.
FEATURE_INPUT_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    "exchange": pl.String,
    "underlying": pl.String,
    "trade_date": pl.Date,
    "expiry": pl.Date,
    "strike": pl.Float64,
    "option_type": pl.String,
    "oi": pl.Int64,
    "volume": pl.Int64,
    "iv": pl.Float64,
    "delta": pl.Float64,
    "underlying_price": pl.Float64,
    "time_to_expiry_seconds": pl.Int64,
}
FEATURE_SCHEMA = {
    "trade_date": pl.Date,
    "ts": pl.Datetime("us", "UTC"),
    "exchange": pl.String,
    "underlying": pl.String,
    "underlying_price": pl.Float64,
    "nearest_expiry": pl.Date,
    "time_to_expiry_hours": pl.Float64,
    "pcr_oi": pl.Float64,
    "pcr_volume": pl.Float64,
    "pcr_itm_oi": pl.Float64,
    "total_oi": pl.Int64,
    "total_itm_oi_ce": pl.Int64,
    "total_itm_oi_pe": pl.Int64,
    "max_pain": pl.Float64,
    "atm_iv": pl.Float64,
    "iv_skew": pl.Float64,
    "skew_method": pl.String,
    "oi_change_pct_short": pl.Float64,
    "oi_change_pct_long": pl.Float64,
    "complete": pl.Boolean,
}


def reject_quotes(quotes: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(usable quotes, rejects with file, line and reason): unreadable keys, negative or crossed prices, an
    option past its expiry in the chain, a key listed twice in one snapshot (the first is kept)."""
    negative = [c for c in ("ltp", "bid", "ask", "iv", "volume", "oi")]
    problems = [
        (pl.col("expiry").is_null(), "expiry unreadable"),
        (~(pl.col("strike") > 0).fill_null(False), "strike is not a positive number"),
        (~pl.col("option_type").is_in(["C", "P"]).fill_null(False), "option type is not C or P"),
        *(((pl.col(c) < 0).fill_null(False), f"{c} is negative") for c in negative),
        (((pl.col("bid") > pl.col("ask")) & (pl.col("ask") > 0)).fill_null(False), "crossed quote: bid above ask"),
        ((pl.col("expires_at") <= pl.col("ts")).fill_null(False), "option past its expiry in a live chain"),
        (pl.struct(KEY).is_duplicated() & ~pl.struct(KEY).is_first_distinct(), "listed twice in the snapshot"),
    ]
    reason = pl.concat_str([pl.when(t).then(pl.lit(text)) for t, text in problems], separator="; ", ignore_nulls=True)
    checked = quotes.with_columns(reason=reason)
    rejects = checked.filter(pl.col("reason") != "").select(
        "source_file",
        "source_line",
        "reason",
        raw=pl.format("{} {} {} {}", "underlying", "expiry", "strike", "option_type"),
    )
    return checked.filter(pl.col("reason") == "").drop("reason"), rejects


def parity_underlying(quotes: pl.DataFrame) -> pl.DataFrame:
    """Fill a missing underlying_price with the put-call parity estimate K + C - P at the strike of the nearest
    expiry where call and put last prices are closest (the implied forward, which carry makes slightly above
    spot for a far expiry)."""
    pairs = quotes.filter(pl.col("ltp") > 0).pivot(
        on="option_type", index=[*SNAPSHOT, "expiry", "strike"], values="ltp", aggregate_function="first"
    )
    if "C" not in pairs.columns or "P" not in pairs.columns:
        return quotes
    estimate = (
        pairs.drop_nulls(["C", "P"])
        .sort(*SNAPSHOT, "expiry", (pl.col("C") - pl.col("P")).abs())
        .group_by(SNAPSHOT, maintain_order=True)
        .agg(parity=(pl.col("strike") + pl.col("C") - pl.col("P")).first())
    )
    return (
        quotes.join(estimate, on=SNAPSHOT, how="left")
        .with_columns(underlying_price=pl.coalesce("underlying_price", "parity"))
        .drop("parity")
    )


def snapshot_rows(quotes: pl.DataFrame) -> pl.DataFrame:
    """Quotes with trade_date, moneyness (underlying / strike), time to expiry in seconds and the spread."""
    return parity_underlying(quotes).with_columns(
        trade_date=exchange_date(pl.col("ts"), pl.col("exchange")),
        moneyness=pl.col("underlying_price") / pl.col("strike"),
        time_to_expiry_seconds=(pl.col("expires_at") - pl.col("ts")).dt.total_seconds(),
        spread=pl.col("ask") - pl.col("bid"),
    )


def _ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    return pl.when(denominator > 0).then(numerator / denominator)


def _max_pain(nearest: pl.DataFrame) -> pl.DataFrame:
    """Per snapshot, the strike of the nearest expiry minimizing the holders' payout."""
    candidates = nearest.select(*SNAPSHOT, settle="strike").unique()
    payout = (
        nearest.filter(pl.col("oi") > 0)
        .join(candidates, on=SNAPSHOT)
        .with_columns(
            paid=pl.when(pl.col("option_type") == "C")
            .then((pl.col("settle") - pl.col("strike")).clip(lower_bound=0))
            .otherwise((pl.col("strike") - pl.col("settle")).clip(lower_bound=0))
            * pl.col("oi")
        )
        .group_by(*SNAPSHOT, "settle")
        .agg(pl.col("paid").sum())
    )
    return (
        payout.sort(*SNAPSHOT, "paid", "settle")
        .group_by(SNAPSHOT, maintain_order=True)
        .agg(max_pain=pl.col("settle").first())
    )


def _atm_and_skew(nearest: pl.DataFrame) -> pl.DataFrame:
    usable = nearest.filter(pl.col("iv") >= PLACEHOLDER_IV)
    atm = (
        usable.with_columns(distance=(pl.col("strike") - pl.col("underlying_price")).abs())
        .filter(pl.col("distance") == pl.col("distance").min().over(SNAPSHOT))
        .group_by(SNAPSHOT)
        .agg(atm_iv=pl.col("iv").mean())
    )

    def nearest_iv(side: str, measure: pl.Expr, aim: float, name: str) -> pl.DataFrame:
        """Per snapshot, the IV of the `side` option whose `measure` is nearest `aim`."""
        return (
            usable.filter(pl.col("option_type") == side, measure.is_not_null())
            .with_columns(gap=(measure - aim).abs())
            .sort(*SNAPSHOT, "gap", "strike")
            .group_by(SNAPSHOT, maintain_order=True)
            .agg(pl.col("iv").first().alias(name))
        )

    relative = pl.col("strike") / pl.col("underlying_price")
    by_delta = nearest_iv("P", pl.col("delta"), -0.25, "put_iv").join(
        nearest_iv("C", pl.col("delta"), 0.25, "call_iv"), on=SNAPSHOT
    )
    by_strike = nearest_iv("P", relative, 0.95, "put_iv").join(nearest_iv("C", relative, 1.05, "call_iv"), on=SNAPSHOT)
    skew = pl.concat(
        [
            by_delta.select(*SNAPSHOT, iv_skew=pl.col("put_iv") - pl.col("call_iv"), skew_method=pl.lit("25 delta")),
            by_strike.select(
                *SNAPSHOT, iv_skew=pl.col("put_iv") - pl.col("call_iv"), skew_method=pl.lit("strikes 95%/105%")
            ),
        ]
    ).unique(SNAPSHOT, keep="first", maintain_order=True)
    return atm.join(skew, on=SNAPSHOT, how="full", coalesce=True)


def snapshot_totals(snapshots: pl.DataFrame) -> pl.DataFrame:
    """Per snapshot: its trade_date and total open interest (what the OI change compares over time)."""
    return snapshots.group_by(SNAPSHOT).agg(pl.col("trade_date").first(), total_oi=pl.col("oi").sum())


def _oi_changes(totals: pl.DataFrame) -> pl.DataFrame:
    """oi_change_pct_short/long per snapshot of `totals` (SNAPSHOT, trade_date, total_oi), by time."""
    intraday = totals.group_by("exchange", "underlying", "trade_date").len().filter(pl.col("len") > 1)
    marked = totals.join(
        intraday.select("exchange", "underlying", "trade_date", intraday=pl.lit(True)),
        on=["exchange", "underlying", "trade_date"],
        how="left",
    ).with_columns(pl.col("intraday").fill_null(False))
    frames = []
    for exchange, group in marked.partition_by("exchange", as_dict=True).items():
        calendar = EXCHANGE_CALENDARS[exchange[0]]
        sessions = session_table(
            [calendar], group["trade_date"].min() - timedelta(days=60), group["trade_date"].max()
        ).select(trade_date="session_date", ordinal="session_ordinal")
        eod = group.filter(~pl.col("intraday")).join(sessions, on="trade_date", how="left")
        for name, back in zip(("short", "long"), EOD_SESSIONS, strict=True):
            earlier = eod.select("underlying", ordinal=pl.col("ordinal") + back, earlier=pl.col("total_oi"))
            eod = eod.join(earlier, on=["underlying", "ordinal"], how="left").rename({"earlier": f"earlier_{name}"})
        day = group.filter(pl.col("intraday")).sort("ts")
        for name, minutes in zip(("short", "long"), INTRADAY_MINUTES, strict=True):
            then = day.select("underlying", ts=pl.col("ts") + pl.duration(minutes=minutes), earlier="total_oi")
            day = (
                day.sort("ts")
                .join_asof(
                    then.sort("ts"),
                    on="ts",
                    by="underlying",
                    strategy="backward",
                    tolerance=timedelta(minutes=1),
                    check_sortedness=False,  # sorted by ts above; polars cannot verify it within groups
                )
                .rename({"earlier": f"earlier_{name}"})
            )
        frames += [eod.drop("ordinal"), day]
    joined = pl.concat(frames, how="diagonal_relaxed")
    return joined.select(
        *SNAPSHOT,
        **{
            f"oi_change_pct_{n}": _ratio(pl.col("total_oi") - pl.col(f"earlier_{n}"), pl.col(f"earlier_{n}")) * 100
            for n in ("short", "long")
        },
    )


def features(snapshots: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """FEATURE_SCHEMA rows (without the JSON) for each snapshot of `snapshots` (snapshot_rows output);
    `history` is snapshot_totals of the earlier snapshots the OI changes look back to."""
    if snapshots.is_empty():
        return pl.DataFrame(schema=FEATURE_SCHEMA)
    call, put = pl.col("option_type") == "C", pl.col("option_type") == "P"
    itm_call = call & (pl.col("strike") < pl.col("underlying_price"))
    itm_put = put & (pl.col("strike") > pl.col("underlying_price"))
    sums = snapshots.group_by(SNAPSHOT).agg(
        trade_date=pl.col("trade_date").first(),
        underlying_price=pl.col("underlying_price").first(),
        call_oi=pl.col("oi").filter(call).sum(),
        put_oi=pl.col("oi").filter(put).sum(),
        call_volume=pl.col("volume").filter(call).sum(),
        put_volume=pl.col("volume").filter(put).sum(),
        total_itm_oi_ce=pl.col("oi").filter(itm_call).sum(),
        total_itm_oi_pe=pl.col("oi").filter(itm_put).sum(),
        total_oi=pl.col("oi").sum(),
        any_oi=pl.col("oi").is_not_null().any(),
        nearest_expiry=pl.col("expiry").min(),
        time_to_expiry_hours=pl.col("time_to_expiry_seconds").min() / 3600,
    )
    nearest = snapshots.filter(pl.col("expiry") == pl.col("expiry").min().over(SNAPSHOT))
    totals = pl.concat([history, snapshot_totals(snapshots)]).unique(SNAPSHOT, keep="last")
    out = (
        sums.join(_max_pain(nearest), on=SNAPSHOT, how="left")
        .join(_atm_and_skew(nearest), on=SNAPSHOT, how="left")
        .join(_oi_changes(totals), on=SNAPSHOT, how="left")
        .with_columns(
            pcr_oi=pl.when(pl.col("any_oi")).then(_ratio(pl.col("put_oi"), pl.col("call_oi"))),
            pcr_volume=_ratio(pl.col("put_volume"), pl.col("call_volume")),
            pcr_itm_oi=pl.when(pl.col("any_oi")).then(_ratio(pl.col("total_itm_oi_pe"), pl.col("total_itm_oi_ce"))),
            total_oi=pl.when(pl.col("any_oi")).then(pl.col("total_oi")),
        )
        .with_columns(
            complete=pl.all_horizontal(
                pl.col(c).is_not_null() for c in ("underlying_price", "pcr_oi", "max_pain", "atm_iv")
            )
        )
    )
    return out.select([pl.col(n).cast(t) for n, t in FEATURE_SCHEMA.items()]).sort(SNAPSHOT)


def with_payload(rows: pl.DataFrame) -> pl.DataFrame:
    """Add `features`: every feature of the row as one JSON object (NaN and infinities as null)."""
    values = [c for c in FEATURE_SCHEMA if c not in ("trade_date", "ts", "exchange", "underlying")]
    cleaned = [
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) if rows.schema[c] == pl.Float64 else pl.col(c)
        for c in values
    ]
    return rows.with_columns(features=pl.struct(cleaned).struct.json_encode())
