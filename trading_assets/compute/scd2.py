"""Point-in-time versions (SCD type 2) derived from an append-only observation log.

A log row says what a source reported about a key at an effective time: an `upsert` of some fields
(missing fields keep their stored value) or a `retire`. Full snapshots of an exchange are a second input:
a key of that exchange seen before a snapshot and absent from it is retired at the snapshot's time.
Versions are half-open `[valid_from, valid_until)`; a new one opens only where a versioned field changes,
exactly where the previous one closes. The result depends on the log alone, never on the order in which
observations were recorded, so a snapshot loaded late lands where it belongs.
"""

from __future__ import annotations

import polars as pl

# What a symbol version holds; a change of any but `status` opens a new version (`status` rides along:
# every status that matters also flips `active`).
SYMBOL_FIELDS: dict[str, pl.DataType] = {
    "exchange": pl.String,
    "base": pl.String,
    "quote": pl.String,
    "type": pl.String,
    "subtype": pl.String,
    "profile": pl.String,
    "description": pl.String,
    "sector": pl.String,
    "industry": pl.String,
    "country": pl.String,
    "pricescale": pl.Int64,
    "minmov": pl.Int64,
    "tick_size": pl.Float64,
    "lot_size": pl.Float64,
    "min_qty": pl.Float64,
    "min_notional": pl.Float64,
    "contract_size": pl.Float64,
    "timezone": pl.String,
    "session": pl.String,
    "active": pl.Boolean,
    "status": pl.String,
}
SYMBOL_VERSIONED = [f for f in SYMBOL_FIELDS if f != "status"]
STRUCTURAL_FIELDS = ["tick_size", "pricescale", "minmov", "lot_size", "min_qty", "min_notional", "contract_size"]
EXCHANGE_FIELDS: dict[str, pl.DataType] = {
    "country": pl.String,
    "timezone": pl.String,
    "is_crypto": pl.Boolean,
    "calendar": pl.String,
    "description": pl.String,
}
# Two numbers closer than this are the same value (tick sizes travel as decimal strings and floats).
NUMERIC_TOLERANCE = 1e-12

UTC_TIME = pl.Datetime("us", "UTC")


def retirements_from_snapshots(
    observations: pl.DataFrame, snapshots: pl.DataFrame, key: str = "symbol"
) -> pl.DataFrame:
    """Retire observations for keys missing from a full snapshot of their exchange.

    `snapshots`: one row per (exchange, effective_at, member key). A key is retired at a snapshot's time
    when it was observed on that exchange before it and is not a member; listing it later relists it.
    """
    if snapshots.is_empty() or observations.is_empty():
        return observations.clear().select(key, "effective_at")
    first_seen = observations.group_by(key).agg(
        exchange=pl.col("exchange").drop_nulls().first(), first_seen=pl.col("effective_at").min()
    )
    times = snapshots.select("exchange", "effective_at").unique()
    candidates = first_seen.join(times, on="exchange").filter(pl.col("first_seen") < pl.col("effective_at"))
    members = snapshots.select("exchange", "effective_at", key)
    return candidates.join(members, on=["exchange", "effective_at", key], how="anti").select(key, "effective_at")


def _changed(previous: str, current: str, dtype: pl.DataType) -> pl.Expr:
    a, b = pl.col(previous), pl.col(current)
    if dtype == pl.Float64:
        same = (a.is_null() & b.is_null()) | ((a - b).abs() <= NUMERIC_TOLERANCE)
        return ~same.fill_null(False)
    return ~a.eq_missing(b)


def derive_versions(
    observations: pl.DataFrame,
    fields: dict[str, pl.DataType],
    versioned: list[str],
    key: str = "symbol",
) -> pl.DataFrame:
    """Versions of every key in `observations` (key, effective_at, recorded_at, action, fields...).

    Observations are applied in effective-time order (recorded time, then log order, breaking ties):
    an upsert overlays its non-null fields and, carrying no `active`, means listed; a retire sets
    `active = false`. Returns key, valid_from, valid_until (null = current), the fields, recorded_at.
    """
    if observations.is_empty():
        return pl.DataFrame(
            schema={key: pl.String, "valid_from": UTC_TIME, "valid_until": UTC_TIME, **fields, "recorded_at": UTC_TIME}
        )
    ordered = observations.sort(key, "effective_at", "recorded_at", "observation_id").with_columns(
        # A retire says only that the key is gone; whatever else its row holds is not a statement.
        pl.when(pl.col("action") != "retire").then(pl.col(f)).alias(f)
        for f in fields
    )
    listed = pl.when(pl.col("action") == "retire").then(False)
    if "active" in fields:
        listed = listed.otherwise(pl.col("active").fill_null(True))
        ordered = ordered.with_columns(active=listed)
    states = (
        ordered.with_columns(pl.col(f).forward_fill().over(key) for f in fields if f != "active")
        .with_columns(recorded_at=pl.col("recorded_at").cum_max().over(key))
        # Several observations at one instant make one state: the last of them.
        .group_by(key, "effective_at", maintain_order=True)
        .last()
    )
    shifted = states.with_columns(pl.col(versioned).shift(1).over(key).name.prefix("_previous_"))
    is_new = pl.col("effective_at") == pl.col("effective_at").first().over(key)
    for field in versioned:
        is_new = is_new | _changed(f"_previous_{field}", field, fields[field])
    versions = shifted.filter(is_new).with_columns(
        valid_from=pl.col("effective_at"), valid_until=pl.col("effective_at").shift(-1).over(key)
    )
    return versions.select(key, "valid_from", "valid_until", *fields, "recorded_at").sort(key, "valid_from")


def version_problem_rows(versions: pl.DataFrame, key: str = "symbol") -> dict[str, pl.DataFrame]:
    """What must never happen, as the offending rows: the keys with several current versions, and the versions
    followed by a gap or an overlap, or empty or reversed."""
    ordered = versions.sort(key, "valid_from")
    current = ordered.filter(pl.col("valid_until").is_null()).group_by(key, maintain_order=True).len()
    following = ordered.with_columns(next_from=pl.col("valid_from").shift(-1).over(key)).filter(
        pl.col("next_from").is_not_null()
    )
    return {
        "several_current": current.filter(pl.col("len") > 1).select(key),
        "not_contiguous": following.filter(pl.col("valid_until").ne_missing(pl.col("next_from"))).drop("next_from"),
        "empty_or_reversed": ordered.filter(pl.col("valid_until") <= pl.col("valid_from")),
    }


def version_problems(versions: pl.DataFrame, key: str = "symbol") -> dict[str, int]:
    """Counts of version_problem_rows."""
    return {name: rows.height for name, rows in version_problem_rows(versions, key).items()}
