"""VIX inputs: CBOE CFE per-contract VX files and spot index files (a date, the VIX close and an index close)."""

import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from trading_assets.compute.validation import REJECT_SCHEMA
from trading_assets.errors import input_error

CONTRACT_SCHEMA = {
    "trade_date": pl.Date,
    "contract_month": pl.Date,
    "settle": pl.Float64,
    "open_interest": pl.Int64,
    "source_file": pl.String,
    "source_line": pl.Int32,
}
SPOT_SCHEMA = {"trade_date": pl.Date, "vix": pl.Float64, "index_close": pl.Float64}
CONTRACT_HEADER = "Trade Date,Futures,"
# Before this date CFE quoted VX at ten times the index (the "old VX" contract).
RESCALED_FROM = date(2007, 3, 26)
_MONTH_CODES = {code: month for month, code in enumerate("FGHJKMNQUVXZ", start=1)}
_FUTURES = re.compile(r"^([FGHJKMNQUVXZ]) \((\w{3}) (\d{2})\)$")


@dataclass(frozen=True)
class ContractRead:
    rows: pl.DataFrame  # CONTRACT_SCHEMA: traded days only
    rejects: pl.DataFrame  # REJECT_SCHEMA
    not_traded: int  # zero-filled rows CFE lists before a contract's first trade


def contract_month(futures: str) -> date | None:
    """'F (Jan 08)' -> 2008-01-01; None when the name is not a VX contract month."""
    match = _FUTURES.match(futures.strip())
    if not match:
        return None
    code, _, year = match.groups()
    return date(2000 + int(year), _MONTH_CODES[code], 1)


def read_contracts(paths: list[Path]) -> ContractRead:
    """Settlements of the VX contract files; rows that cannot be used are rejected with file, line and reason."""
    rows, rejects, not_traded = [], [], 0
    for path in paths:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        header_at = next((i for i, line in enumerate(lines[:5]) if line.startswith(CONTRACT_HEADER)), None)
        if header_at is None:
            raise input_error(path, f"no '{CONTRACT_HEADER}...' header in its first lines: not a CFE VX file")
        for number, line in enumerate(lines[header_at + 1 :], start=header_at + 2):
            if not line.strip():
                continue
            fields = line.split(",")

            if len(fields) != 11:
                rejects.append((path.name, number, f"{len(fields)} fields, expected 11", line))
                continue
            try:
                month, day, year = (int(part) for part in fields[0].split("/"))
                trade_date = date(year, month, day)
                settle = float(fields[6])
                open_interest = int(float(fields[10]))
            except ValueError as exc:
                rejects.append((path.name, number, f"unreadable value: {exc}", line))
                continue
            contract = contract_month(fields[1])
            if contract is None:
                reason = f"futures name {fields[1]!r} is not a VX contract month like 'F (Jan 08)'"
                rejects.append((path.name, number, reason, line))
            elif not math.isfinite(settle) or settle < 0:
                rejects.append((path.name, number, f"settlement {fields[6]} is not a non-negative price", line))
            elif settle == 0:
                not_traded += 1
            else:
                scale = 10 if trade_date < RESCALED_FROM else 1
                rows.append((trade_date, contract, settle / scale, open_interest, path.name, number))
    return ContractRead(
        pl.DataFrame(rows, schema=CONTRACT_SCHEMA, orient="row"),
        pl.DataFrame(rejects, schema=REJECT_SCHEMA, orient="row"),
        not_traded,
    )


def read_spot(path: Path, index_column: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(SPOT_SCHEMA rows, rejects) of a file with DATE, VIX and `index_column` columns (others ignored)."""
    frame = pl.read_csv(path, infer_schema=False)
    missing = [c for c in ("DATE", "VIX", index_column) if c not in frame.columns]
    if missing:
        raise input_error(path, f"no column {', '.join(missing)} (columns: {', '.join(frame.columns)})")
    parsed = frame.with_row_index("source_line", offset=2).select(
        "source_line",
        trade_date=pl.col("DATE").str.to_date("%Y-%m-%d", strict=False),
        vix=pl.col("VIX").cast(pl.Float64, strict=False),
        index_close=pl.col(index_column).cast(pl.Float64, strict=False),
        raw=pl.concat_str(pl.col("DATE"), pl.col("VIX"), separator=",", ignore_nulls=True),
    )
    usable_vix = (pl.col("vix").is_finite() & (pl.col("vix") > 0)).fill_null(False)
    bad = parsed.filter(pl.col("trade_date").is_null() | ~usable_vix)
    rejects = bad.select(
        source_file=pl.lit(path.name),
        source_line=pl.col("source_line").cast(pl.Int32),
        reason=pl.when(pl.col("trade_date").is_null())
        .then(pl.lit("unreadable DATE"))
        .otherwise(pl.lit("VIX is not a positive number")),
        raw="raw",
    )
    good = parsed.join(bad.select("source_line"), on="source_line", how="anti")
    twice = good.filter(pl.col("trade_date").is_duplicated())
    if not twice.is_empty():
        raise input_error(path, f"date {twice['trade_date'][0]} is listed twice", twice["source_line"][1])
    return good.select(list(SPOT_SCHEMA)), rejects


def merged_spot(paths: list[Path], frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The spot rows of several files as one; a date two files give different values is refused (which one is
    right is the user's call), the same values twice are one row."""
    tagged = pl.concat(
        [pl.DataFrame(schema={**SPOT_SCHEMA, "file": pl.String})]
        + [f.with_columns(file=pl.lit(p.name)) for p, f in zip(paths, frames, strict=True)]
    )
    merged = tagged.unique(["trade_date", "vix", "index_close"], keep="first", maintain_order=True)
    clash = merged.filter(pl.col("trade_date").is_duplicated()).sort("trade_date")
    if not clash.is_empty():
        day = clash["trade_date"][0]
        files = ", ".join(clash.filter(pl.col("trade_date") == day)["file"].to_list())
        raise input_error(files, f"{day} is given different VIX or index closes; keep one file's value")
    return merged.drop("file").sort("trade_date")
