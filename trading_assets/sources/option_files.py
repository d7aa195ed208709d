"""Option-chain snapshot files: Lean option universes (an end-of-day chain per date, the underlying on its second
line) and NSE option-chain exports (one expiry per file, calls left and puts right of the strike).

Landing layout (under the trading landing folder's `options/`):
- `lean/<root>/<YYYYMMDD>.csv`: the snapshot is the close of that date (16:00 America/New_York);
- `nse/<YYYY-MM-DDTHH-MM>/option-chain-ED-<UNDERLYING>-<DD-Mon-YYYY>.csv`: the folder names the snapshot's
  instant in Asia/Kolkata (the export itself carries no time), the file name the underlying and the expiry.
"""

import re
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from trading_assets.errors import input_error

NEW_YORK, KOLKATA = ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")
# When an option stops trading on its expiry date, in its exchange's time: US equity and PM-settled index options
# at the close; AM-settled SPX and NDX monthlies at the open (their settlement prices are the opening prints).
EXPIRY_TIMES = {"US": time(16, 0), "NSE": time(15, 30)}
AM_SETTLED_ROOTS = {"SPX", "NQX", "NDX"}
EXCHANGE_ZONES = {"US": NEW_YORK, "NSE": KOLKATA}
US_CLOSE = time(16, 0)

QUOTE_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    "exchange": pl.String,
    "underlying": pl.String,
    "expiry": pl.Date,
    "strike": pl.Float64,
    "option_type": pl.String,
    "ltp": pl.Float64,
    "volume": pl.Int64,
    "oi": pl.Int64,
    "oi_change": pl.Int64,
    "iv": pl.Float64,
    "delta": pl.Float64,
    "gamma": pl.Float64,
    "vega": pl.Float64,
    "theta": pl.Float64,
    "rho": pl.Float64,
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_qty": pl.Int64,
    "ask_qty": pl.Int64,
    "underlying_price": pl.Float64,
    "expires_at": pl.Datetime("us", "UTC"),
    "source_file": pl.String,
    "source_line": pl.Int32,
}
_LEAN_HEADER = (
    "#expiry,strike,right,open,high,low,close,volume,open_interest,implied_volatility,delta,gamma,vega,theta,rho"
)
_NSE_NAME = re.compile(r"^option-chain-ED-([A-Z0-9&-]+?)-(\d{2}-[A-Za-z]{3}-\d{4})\.csv$")
# Columns of an NSE export after its leading empty one: the call side, the strike, then the put side, whose quote
# columns come in the call side's order and the rest mirrored.
_NSE_CALLS = ["oi", "oi_change", "volume", "iv", "ltp", "chng", "bid_qty", "bid", "ask", "ask_qty"]
_NSE_PUTS = ["bid_qty", "bid", "ask", "ask_qty", "chng", "ltp", "iv", "volume", "oi_change", "oi"]


def _expires_at(expiry: pl.Expr, exchange: str, underlying: str) -> pl.Expr:
    at = time(9, 30) if underlying in AM_SETTLED_ROOTS else EXPIRY_TIMES[exchange]
    zone = EXCHANGE_ZONES[exchange].key
    return (
        (expiry.cast(pl.Datetime("us")) + pl.duration(hours=at.hour, minutes=at.minute))
        .dt.replace_time_zone(zone)
        .dt.convert_time_zone("UTC")
    )


def lean_root(path: Path) -> str:
    """`.../option_spy/20240102.csv` -> SPY; `.../indexoption_spxw/...` -> SPXW."""
    return path.parent.name.split("_", 1)[-1].upper()


def read_lean_universe(path: Path) -> pl.DataFrame:
    """QUOTE_SCHEMA rows of a Lean option universe file (an end-of-day chain at that date's close)."""
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != _LEAN_HEADER or len(lines) < 2:
        raise input_error(path, f"not a Lean option universe (first line {lines[0][:60] if lines else ''!r})")
    try:
        day = datetime.strptime(path.stem, "%Y%m%d").date()
    except ValueError as exc:
        raise input_error(path, "the file name is not the chain's date (YYYYMMDD.csv)") from exc
    underlying_close = float(lines[1].split(",")[6])
    root = lean_root(path)
    frame = pl.read_csv(
        path,
        skip_rows=2,
        has_header=False,
        new_columns=_LEAN_HEADER.lstrip("#").split(","),
        schema_overrides={"expiry": pl.String, "right": pl.String},
        infer_schema_length=0,
    ).with_row_index("source_line", offset=3)
    number = {c: pl.col(c).cast(pl.Float64, strict=False) for c in ("close", "implied_volatility", "delta", "gamma")}
    return frame.select(
        ts=pl.lit(datetime.combine(day, US_CLOSE, NEW_YORK)).dt.convert_time_zone("UTC"),
        exchange=pl.lit("US"),
        underlying=pl.lit(root),
        expiry=pl.col("expiry").str.to_date("%Y%m%d", strict=False),
        strike=pl.col("strike").cast(pl.Float64, strict=False),
        option_type=pl.col("right").str.to_uppercase(),
        ltp=number["close"],
        volume=pl.col("volume").cast(pl.Float64, strict=False).cast(pl.Int64),
        oi=pl.col("open_interest").cast(pl.Float64, strict=False).cast(pl.Int64),
        oi_change=pl.lit(None, pl.Int64),
        iv=number["implied_volatility"],
        delta=number["delta"],
        gamma=number["gamma"],
        vega=pl.col("vega").cast(pl.Float64, strict=False),
        theta=pl.col("theta").cast(pl.Float64, strict=False),
        rho=pl.col("rho").cast(pl.Float64, strict=False),
        bid=pl.lit(None, pl.Float64),
        ask=pl.lit(None, pl.Float64),
        bid_qty=pl.lit(None, pl.Int64),
        ask_qty=pl.lit(None, pl.Int64),
        underlying_price=pl.lit(underlying_close),
        expires_at=_expires_at(pl.col("expiry").str.to_date("%Y%m%d", strict=False), "US", root),
        source_file=pl.lit(f"{path.parent.name}/{path.name}"),
        source_line=pl.col("source_line").cast(pl.Int32),
    )


def nse_snapshot(path: Path) -> tuple[str, date, datetime]:
    """(underlying, expiry, snapshot instant) of an NSE export from its file and folder names."""
    match = _NSE_NAME.match(path.name)
    if not match:
        raise input_error(path, "not named option-chain-ED-<UNDERLYING>-<DD-Mon-YYYY>.csv")
    try:
        taken = datetime.strptime(path.parent.name, "%Y-%m-%dT%H-%M").replace(tzinfo=KOLKATA)
    except ValueError as exc:
        raise input_error(path, "its folder must name the snapshot's Asia/Kolkata time (YYYY-MM-DDTHH-MM)") from exc
    return match.group(1), datetime.strptime(match.group(2), "%d-%b-%Y").date(), taken


def read_nse_chain(path: Path) -> pl.DataFrame:
    """QUOTE_SCHEMA rows of an NSE option-chain export; '-' is missing, '1,41,256' is 141256. The export has
    no underlying price: it is left for the put-call parity estimate (underlying_price null)."""
    underlying, expiry, taken = nse_snapshot(path)
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[1].startswith(",OI,CHNG IN OI,VOLUME,IV,LTP"):
        raise input_error(path, "second line is not the NSE option-chain header (,OI,CHNG IN OI,VOLUME,IV,LTP...)")
    names = ["lead", *(f"c_{c}" for c in _NSE_CALLS), "strike", *(f"p_{c}" for c in _NSE_PUTS), "trail"]
    frame = pl.read_csv(path, skip_rows=2, has_header=False, new_columns=names, infer_schema_length=0)
    frame = frame.with_row_index("source_line", offset=3).with_columns(
        pl.col(c).str.replace_all(",", "").replace("-", None) for c in names if c not in ("lead", "trail")
    )
    sides = []
    for prefix, option_type in (("c_", "C"), ("p_", "P")):
        value = {c: pl.col(prefix + c) for c in _NSE_CALLS}
        sides.append(
            frame.select(
                ts=pl.lit(taken).dt.convert_time_zone("UTC"),
                exchange=pl.lit("NSE"),
                underlying=pl.lit(underlying),
                expiry=pl.lit(expiry),
                strike=pl.col("strike").cast(pl.Float64, strict=False),
                option_type=pl.lit(option_type),
                ltp=value["ltp"].cast(pl.Float64, strict=False),
                volume=value["volume"].cast(pl.Int64, strict=False),
                oi=value["oi"].cast(pl.Int64, strict=False),
                oi_change=value["oi_change"].cast(pl.Int64, strict=False),
                iv=value["iv"].cast(pl.Float64, strict=False) / 100,
                delta=pl.lit(None, pl.Float64),
                gamma=pl.lit(None, pl.Float64),
                vega=pl.lit(None, pl.Float64),
                theta=pl.lit(None, pl.Float64),
                rho=pl.lit(None, pl.Float64),
                bid=value["bid"].cast(pl.Float64, strict=False),
                ask=value["ask"].cast(pl.Float64, strict=False),
                bid_qty=value["bid_qty"].cast(pl.Int64, strict=False),
                ask_qty=value["ask_qty"].cast(pl.Int64, strict=False),
                underlying_price=pl.lit(None, pl.Float64),
                expires_at=_expires_at(pl.lit(expiry), "NSE", underlying),
                source_file=pl.lit(f"{path.parent.name}/{path.name}"),
                source_line=pl.col("source_line").cast(pl.Int32),
            )
        )
    return pl.concat(sides)
