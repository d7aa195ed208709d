"""Paper-trade files: one trade per line (order_id, symbol, side, qty, price, fees, strategy, submitted_at,
filled_at); timestamps in ISO 8601 with their UTC offset."""

from pathlib import Path

import polars as pl

from trading_assets.compute.validation import REJECT_SCHEMA
from trading_assets.errors import input_error

COLUMNS = ["order_id", "symbol", "side", "qty", "price", "fees", "strategy", "submitted_at", "filled_at"]
TRADE_SCHEMA = {
    "order_id": pl.String,
    "symbol": pl.String,
    "side": pl.String,
    "qty": pl.Float64,
    "price": pl.Float64,
    "fees": pl.Float64,
    "strategy": pl.String,
    "submitted_at": pl.Datetime("us", "UTC"),
    "filled_at": pl.Datetime("us", "UTC"),
    "trade_date": pl.Date,
    "source_file": pl.String,
    "source_line": pl.Int32,
}


def _instant(column: str) -> pl.Expr:
    # An instant without its offset is ambiguous: it is refused, never guessed.
    return (
        pl.col(column)
        .str.replace(r"[zZ]$", "+00:00")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us")
        .dt.convert_time_zone("UTC")
    )


def read_trades(paths: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(trades in TRADE_SCHEMA, rejects in REJECT_SCHEMA) of `paths`; trade_date is the fill's UTC date. An
    order_id listed twice keeps its first line; the other lines are rejected."""
    trades, rejects = [], []
    for path in paths:
        frame = pl.read_csv(path, infer_schema=False).with_columns(pl.all().fill_null(""))
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise input_error(path, f"missing column {', '.join(missing)} (expected {', '.join(COLUMNS)})")
        parsed = frame.with_row_index("source_line", offset=2).with_columns(
            raw=pl.concat_str([pl.col(c) for c in COLUMNS], separator=","),
            qty_value=pl.col("qty").cast(pl.Float64, strict=False),
            price_value=pl.col("price").cast(pl.Float64, strict=False),
            fees_value=pl.when(pl.col("fees") == "").then(0.0).otherwise(pl.col("fees").cast(pl.Float64, strict=False)),
            submitted=_instant("submitted_at"),
            filled=_instant("filled_at"),
        )
        problems = [
            (pl.col("order_id").str.strip_chars() == "", "order_id is empty"),
            (pl.col("symbol").str.strip_chars() == "", "symbol is empty"),
            (~pl.col("side").str.to_lowercase().is_in(["buy", "sell"]), "side is not buy or sell"),
            (~(pl.col("qty_value").is_finite() & (pl.col("qty_value") > 0)).fill_null(False), "qty is not positive"),
            (
                ~(pl.col("price_value").is_finite() & (pl.col("price_value") > 0)).fill_null(False),
                "price is not positive",
            ),
            (~(pl.col("fees_value").is_finite() & (pl.col("fees_value") >= 0)).fill_null(False), "fees are negative"),
            (pl.col("submitted").is_null(), "submitted_at is not an ISO 8601 instant with its UTC offset"),
            (pl.col("filled").is_null(), "filled_at is not an ISO 8601 instant with its UTC offset"),
            ((pl.col("filled") < pl.col("submitted")).fill_null(False), "filled_at is before submitted_at"),
        ]
        reason = pl.concat_str(
            [pl.when(test).then(pl.lit(text)) for test, text in problems], separator="; ", ignore_nulls=True
        )
        checked = parsed.with_columns(reason=reason)
        rejects.append(
            checked.filter(pl.col("reason") != "").select(
                source_file=pl.lit(path.name),
                source_line=pl.col("source_line").cast(pl.Int32),
                reason="reason",
                raw="raw",
            )
        )
        trades.append(
            checked.filter(pl.col("reason") == "").select(
                "order_id",
                "symbol",
                side=pl.col("side").str.to_lowercase(),
                qty="qty_value",
                price="price_value",
                fees="fees_value",
                strategy="strategy",
                submitted_at="submitted",
                filled_at="filled",
                trade_date=pl.col("filled").dt.date(),
                source_file=pl.lit(path.name),
                source_line=pl.col("source_line").cast(pl.Int32),
            )
        )
    every = pl.concat([pl.DataFrame(schema=TRADE_SCHEMA), *trades])
    first = every.filter(pl.col("order_id").is_first_distinct())
    values = ["symbol", "side", "qty", "price", "fees", "strategy", "submitted_at", "filled_at"]
    repeated = every.filter(~pl.col("order_id").is_first_distinct()).join(first, on="order_id", suffix="_first")
    same = pl.all_horizontal(pl.col(c).eq_missing(pl.col(f"{c}_first")) for c in values)
    rejects.append(
        repeated.select(
            "source_file",
            "source_line",
            reason=pl.format(
                "order_id {} is listed before{} ({} line {}): the first line is kept",
                "order_id",
                pl.when(same).then(pl.lit("")).otherwise(pl.lit(" with other values")),
                "source_file_first",
                "source_line_first",
            ),
            raw="order_id",
        )
    )
    return first, pl.concat([pl.DataFrame(schema=REJECT_SCHEMA), *rejects])
