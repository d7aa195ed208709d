"""Market data: prices as loaded -> daily bars -> the five multi-day bar families.

Each derived month depends on its parent's months up to it (a bar's position and block, like an EMA,
carry all history) and on its own earlier rows (the carry it continues from): a late row or a revision in
any month makes automation rebuild from that month through the current one, in one run. How a run
rewrites its window is in `rebuild.py`.
"""

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.bars import (
    CARRY_SCHEMA,
    PRICES,
    SNAPSHOT_COLUMNS,
    calendar_bars,
    daily_bars,
    invariant_violations,
    multi_tf_bars,
    validate_daily,
    with_bar_times,
)
from trading_assets.compute.calendars import Timeframe, session_table
from trading_assets.compute.rebuild import Window
from trading_assets.compute.validation import PriceBounds, implausible_assets, rows_in_window, symbol_of
from trading_assets.config import Settings
from trading_assets.defs.catalog.assets import EXCHANGES, SYMBOLS
from trading_assets.defs.market.dimensions import DIM_ASSETS, DIM_TIMEFRAME, timeframes_of
from trading_assets.defs.market.rebuild import (
    MARKET_FRESHNESS,
    EndStates,
    FamilyRun,
    ImplausibleInput,
    announce_requeued,
    build_quarantining,
    changes_applied_spec,
    derived_series,
    materialization,
    quarantine_spec,
    selected_checks,
    settle,
    start_family_run,
    written_in_groups,
)
from trading_assets.defs.partitions import partitions_end, run_window
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import ends, preview, report_partitions, table_metadata
from trading_assets.io import market_store, row_counts
from trading_assets.progress import PROGRESS_MESSAGE
from trading_assets.sources.price_files import PriceFile, read_price_file

GROUP = "market"
PRICE_HISTORIES = dg.AssetKey([GROUP, "price_histories"])
BAR_KEYS = {family: dg.AssetKey([GROUP, table]) for family, table in market_store.BAR_TABLES.items()}
# Bumped when what an asset computes from the same inputs changes.
PRICES_CODE_VERSION = "3"
BARS_CODE_VERSION = "6"
FAMILY_TIMEFRAME_RULES = {
    "multi_tf": ("D", False, None),
    "cal_iso": ("WMY", False, "ISO"),
    "cal_us": ("WMY", False, "US"),
    "cal_anchor_iso": ("WMY", True, "ISO"),
    "cal_anchor_us": ("WMY", True, "US"),
}

_EMPTY_BARS = {
    "asset_id": pl.Int64,
    "tf": pl.String,
    "bar_seq": pl.Int64,
    "trade_date": pl.Date,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "is_partial_end": pl.Boolean,
}
_BAR_COLUMNS = [c for c in SNAPSHOT_COLUMNS if c not in ("bar_start", "bar_end")] + ["time_open_bar", "time_close_bar"]
# The other daily-bar columns are constants (tf_days 1, never partial) filled by the table defaults.
_DAILY_COLUMNS = [
    "asset_id", "bar_seq", "trade_date", *PRICES, "volume",
    "time_open_bar", "time_close_bar", "repaired_high", "repaired_low", "is_missing_days", "count_missing_days",
]  # fmt: skip


class PriceFileSpec(dg.Config):
    """One price file and how to read it; options left unset are detected (or refused when they cannot be)."""

    path: str
    symbol: str
    format: str = "auto"
    price_divisor: float | None = None
    timezone: str | None = None
    calendar: str | None = None
    catalog_symbol: str | None = None
    encoding: str | None = None
    date_order: str | None = None


def read_spec(spec: PriceFileSpec, timezone: str, bounds: PriceBounds) -> PriceFile:
    return read_price_file(
        Path(spec.path),
        spec.format,
        spec.price_divisor,
        timezone,
        encoding=spec.encoding,
        date_order=spec.date_order,
        bounds=bounds,
    )


def price_span(conn: psycopg.Connection, specs: list[PriceFileSpec], bounds: PriceBounds) -> tuple[date, date] | None:
    """First and last trading date of the files' usable rows, read as their load will read them (in each
    asset's timezone); refuses a file the load would refuse. None when no file has a usable row."""
    dates = []
    for spec in specs:
        timezone = market_store.asset_timezone(conn, spec.symbol, spec.timezone, spec.catalog_symbol)
        prices = read_spec(spec, timezone, bounds).prices
        dates += [prices["trade_date"].min(), prices["trade_date"].max()] if prices.height else []
    return (min(dates), max(dates)) if dates else None


class PriceFilesConfig(dg.Config):
    """Price files to load; empty means every CSV in the landing folder's `prices/` (symbol = file name)."""

    files: list[PriceFileSpec] = []


class BarsConfig(dg.Config):
    """`asset_ids`: rebuild only these assets (empty: all). Whether the whole window is rewritten or only
    what changed in it is the run's `trading_assets/rebuild` tag (see defs/partitions.py)."""

    asset_ids: list[int] = []


# Blocking checks evaluated on the rows each run writes (rows written earlier were checked then).
INVARIANT_CHECKS = {
    "ohlc_consistent": "high >= max(open, close) >= min(open, close) >= low > 0 on every row written",
    "one_canonical_row_per_bar": "no bar has two canonical rows (daily bars: no repeated bar_seq)",
    "not_newer_than_prices": "every bar row written stands on a date with a loaded price",
}


# What a check reads besides its asset's rows (not_newer_than_prices: the loaded prices, which only the daily
# bars have as a parent), declared on the check so that the graph shows every table a run reads.
_CHECK_READS = {"not_newer_than_prices": [PRICE_HISTORIES]}


def invariant_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        *(
            dg.AssetCheckSpec(
                name, asset=key, blocking=True, description=text, additional_deps=_CHECK_READS.get(name, [])
            )
            for name, text in INVARIANT_CHECKS.items()
        ),
        changes_applied_spec(key),
    ]


# Offending rows shown in a failed invariant's metadata.
_SHOWN_VIOLATIONS = 20
# Daily rows per rebuild chunk: bounds memory to one chunk's snapshots of every timeframe (about 2 GB).
_CHUNK_DAILY_ROWS = 400_000


@dataclass
class WrittenBars:
    """What a rebuild wrote, without its rows: the rows per (asset_id, trade_date), each invariant's violations
    (count and the first offending rows) and a sample. Made per group of assets while the next is stored, so
    that a run never holds a whole family's rows."""

    days: pl.DataFrame
    violations: dict[str, tuple[int, pl.DataFrame]]
    sample: pl.DataFrame

    @classmethod
    def of(cls, bars: pl.DataFrame) -> "WrittenBars":
        found = invariant_violations(bars)
        return cls(
            bars.group_by("asset_id", "trade_date").agg(rows=pl.len()),
            {name: (rows.height, rows.head(_SHOWN_VIOLATIONS)) for name, rows in found.items()},
            ends(bars),
        )

    @classmethod
    def concat(cls, parts: list["WrittenBars"]) -> "WrittenBars":
        if not parts:
            return cls.of(pl.DataFrame(schema=_EMPTY_BARS))
        return cls(
            pl.concat([p.days for p in parts]),
            {
                name: (
                    sum(p.violations[name][0] for p in parts),
                    pl.concat([p.violations[name][1] for p in parts], how="diagonal_relaxed").head(_SHOWN_VIOLATIONS),
                )
                for name in parts[0].violations
            },
            ends(parts[0].sample, parts[-1].sample),
        )


class BarTally:
    """Date range, a sample and invariant violations of the rows one run writes, over its chunks."""

    def __init__(self) -> None:
        self.violations: Counter[str] = Counter()
        self.offending: dict[str, list[pl.DataFrame]] = {name: [] for name in INVARIANT_CHECKS}
        self.dates: list[date] = []
        self.sample: list[pl.DataFrame] = []

    def add(self, conn: psycopg.Connection, written: WrittenBars, prices: pl.DataFrame | None = None) -> None:
        """Tally what one chunk wrote; `prices`: the price rows it was built from, when the caller has them."""
        newer = market_store.rows_without_prices(conn, written.days, prices)
        found = {**written.violations, "not_newer_than_prices": (int(newer["rows"].sum()), newer)}
        for name, (count, rows) in found.items():
            self.violations[name] += count
            if rows.height:
                self.offending[name].append(rows.head(_SHOWN_VIOLATIONS))
        if written.days.height:
            self.dates += [written.days["trade_date"].min(), written.days["trade_date"].max()]
            self.sample.append(written.sample)

    @property
    def failed(self) -> bool:
        return any(self.violations[name] for name in INVARIANT_CHECKS)

    def check_results(self) -> list[dg.AssetCheckResult]:
        results = []
        for name in INVARIANT_CHECKS:
            rows = pl.concat(self.offending[name], how="diagonal_relaxed") if self.offending[name] else pl.DataFrame()
            results.append(
                dg.AssetCheckResult(
                    check_name=name,
                    passed=self.violations[name] == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "violations": self.violations[name],
                        "rolled_back": self.failed,
                        "rows": preview(rows.head(_SHOWN_VIOLATIONS), "violations"),
                    },
                )
            )
        return results

    def metadata(self) -> dict:
        first, last = (str(min(self.dates)), str(max(self.dates))) if self.dates else ("", "")
        rows = pl.concat(self.sample, how="diagonal_relaxed") if self.sample else pl.DataFrame()
        shown = [c for c in ("asset_id", "tf", "bar_seq", "trade_date", *PRICES, "is_partial_end") if c in rows.columns]
        return {"first_date": first, "last_date": last, "preview": preview(rows.select(shown), "rows written")}


def asset_chunks(
    context: dg.AssetExecutionContext, conn: psycopg.Connection, source: str, starts: dict[int, date], end: date
) -> Iterator[dict[int, date]]:
    """`starts` split into groups of assets of at most _CHUNK_DAILY_ROWS days to rebuild (a one-day refresh
    of every asset is one group); logs the assets done after each group but the last (a terminal shows it;
    the step's end says the rest)."""
    # A day holds at most one row per asset: the days are counted only when their calendar span may not fit one
    # group (a one-day refresh of 10,000 assets: a lookup per asset saved in every family).
    may_split = sum(max((end - first).days, 0) for first in starts.values()) > _CHUNK_DAILY_ROWS
    spans = market_store.days_to_rebuild(conn, source, starts, end) if may_split else {}
    chunk: dict[int, date] = {}
    days = done = 0
    for asset_id, first in starts.items():
        if chunk and days + spans.get(asset_id, 0) > _CHUNK_DAILY_ROWS:
            yield chunk
            done += len(chunk)
            context.log.info(PROGRESS_MESSAGE.format(done=done, total=len(starts)))
            chunk, days = {}, 0
        chunk[asset_id] = first
        days += spans.get(asset_id, 0)
    if chunk:
        yield chunk


def prices_landing_dir(settings: Settings) -> Path:
    return settings.landing / "prices"


def _date_range(frame: pl.DataFrame) -> dict[str, str]:
    if frame.is_empty():
        return {"first_date": "", "last_date": ""}
    return {"first_date": str(frame["trade_date"].min()), "last_date": str(frame["trade_date"].max())}


# The rows a load wrote, with where each came from.
_LOADED_SCHEMA = {
    "trade_date": pl.Date,
    "asset_id": pl.Int64,
    **dict.fromkeys(PRICES, pl.Float64),
    "line": pl.Int64,
    "source_file": pl.String,
}


def _load_file(conn: psycopg.Connection, spec: PriceFileSpec, window: Window, bounds: PriceBounds) -> dict:
    asset_id, timezone, _ = market_store.ensure_asset(
        conn, spec.symbol, spec.timezone, spec.calendar, catalog_symbol=spec.catalog_symbol
    )
    parsed = read_spec(spec, timezone, bounds)
    inside = rows_in_window(parsed.prices, "trade_date", window.start, window.end)
    # A row outside the run's months is never dropped silently: it waits, as a reject, for a run over its month.
    outside = parsed.prices.join(inside.select("line"), on="line", how="anti").select(
        "line",
        "trade_date",
        reason=pl.format(
            "trade_date {} is outside this run's months ({} .. {}); load the file in a run over its month",
            "trade_date",
            pl.lit(str(window.start or "start of history")),
            pl.lit(str(window.end - timedelta(days=1))),
        ),
    )
    rejects = (
        pl.concat([parsed.rejects, outside])
        .with_columns(asset_id=pl.lit(asset_id), symbol=pl.lit(spec.symbol), source_file=pl.lit(spec.path))
        .rename({"line": "source_line"})
    )
    acceptable = inside.with_columns(asset_id=pl.lit(asset_id))
    counts = market_store.upsert_prices(conn, asset_id, acceptable)
    return {
        "rows": acceptable.height,
        "inserted": counts.inserted,
        "revised": counts.revised,
        "unchanged": counts.unchanged,
        "rejects": market_store.record_load_rejects(conn, rejects),
        "repeated_rows": parsed.repeats,
        "frame": acceptable.select("trade_date", "asset_id", *PRICES, "line", source_file=pl.lit(spec.path)),
    }


def family_timeframes(conn: psycopg.Connection, family: str) -> list[Timeframe]:
    units, anchored, week_start = FAMILY_TIMEFRAME_RULES[family]
    timeframes = []
    for label in market_store.active_timeframes(conn, family):
        timeframe = Timeframe.parse(label)
        if (
            timeframe.unit not in units
            or timeframe.anchored != anchored
            or (timeframe.unit == "W" and timeframe.week_start != week_start)
        ):
            raise ValueError(f"market.dim_timeframe: {label!r} does not belong to family {family!r}")
        timeframes.append(timeframe)
    return timeframes


def _sessions_of_daily_rows(prices: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The sessions the gap counts of new daily rows need: from the day before the earliest row (stored or new)."""
    if prices.is_empty():
        return session_table([], date.min, date.min)
    first = min(d for d in [prices["trade_date"].min(), stored["previous_trade_date"].min()] if d is not None)
    return session_table(stored["calendar"].unique().to_list(), first - timedelta(days=1), prices["trade_date"].max())


def build_market_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    last_day = partitions_end(partitions)

    @dg.asset(
        key=PRICE_HISTORIES,
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        freshness_policy=MARKET_FRESHNESS,
        deps=[DIM_ASSETS, SYMBOLS, EXCHANGES],
        kinds={"postgres", "polars"},
        code_version=PRICES_CODE_VERSION,
        check_specs=[
            dg.AssetCheckSpec(
                "prices_not_crossed",
                asset=PRICE_HISTORIES,
                blocking=True,
                description="No row this run loaded has its high below its low: such a file has swapped or corrupt "
                "columns, so the bars and EMAs built on it wait (this run's and automation's) until a corrected "
                "file is loaded. A high merely below the close is the daily bars' documented repair, not this.",
            )
        ],
        description="Daily prices as loaded (CSV in common spellings or Lean daily files), one row per asset and "
        "trading date in the asset's timezone (market.dim_assets; from the symbol catalog for linked assets). "
        "Loads register new assets. Changed values are revisions and queue the asset's bars from that date; "
        "unreadable or impossible rows go to market.price_rejects with file, line and reason.",
    )
    def price_histories(
        context: dg.AssetExecutionContext, config: PriceFilesConfig, warehouse: Warehouse
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        started = time.perf_counter()
        specs = config.files or [
            PriceFileSpec(path=str(p), symbol=symbol_of(p.stem))
            for p in sorted(prices_landing_dir(settings).glob("*.csv"))
        ]
        window = run_window(context)
        table = market_store.qualified("price_histories")
        with warehouse.transaction() as conn:
            results = [_load_file(conn, spec, window, settings.price_bounds) for spec in specs]
            loaded = pl.concat([r.pop("frame") for r in results]) if results else pl.DataFrame(schema=_LOADED_SCHEMA)
            rows_now = row_counts.rows_per_month(conn, table)
            described = table_metadata(conn, table, row_counts.table_rows(conn, table))
        totals = {key: sum(r[key] for r in results) for key in ("rows", "inserted", "revised", "unchanged", "rejects")}
        totals["repeated_rows"] = sum(r["repeated_rows"] for r in results)
        crossed = loaded.filter(pl.col("high") < pl.col("low"))
        metadata = {
            **described,
            "files": len(specs),
            "assets": len({s.symbol for s in specs}),
            **{f"run_{key}": value for key, value in totals.items()},
            **_date_range(loaded),
            "preview": preview(loaded.sort("asset_id", "trade_date").drop("line", "source_file"), "rows loaded"),
            "seconds": round(time.perf_counter() - started, 3),
        }
        yield dg.MaterializeResult(
            metadata=report_partitions(context, rows_now, row_counts.rows_by_month(loaded), metadata)
        )
        yield dg.AssetCheckResult(
            check_name="prices_not_crossed",
            passed=crossed.is_empty(),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "crossed_rows": crossed.height,
                "rows": preview(
                    crossed.select("source_file", "line", "trade_date", "high", "low"), "rows with high below low"
                ),
            },
        )

    @derived_series(
        BAR_KEYS["1d"],
        partitions,
        parents=[PRICE_HISTORIES],
        dimensions=[DIM_ASSETS],
        check_specs=invariant_check_specs(BAR_KEYS["1d"]),
        code_version=BARS_CODE_VERSION,
        description="Daily bars, the one source of every multi-day family: the loaded prices with an inconsistent "
        "high/low repaired to max/min(open, close, high/low) and flagged (the original goes to price_rejects).",
    )
    def price_bars_1d(context: dg.AssetExecutionContext, config: BarsConfig, warehouse: Warehouse):
        started = time.perf_counter()
        table = market_store.qualified("price_bars_1d")
        with warehouse.transaction() as conn:
            run = start_family_run(context, conn, "1d", "price_histories", config.asset_ids)
            ends = EndStates(
                conn, run, sql.SQL(table), "price_histories", [market_store.DAILY_TF], _DAILY_COLUMNS, last_day
            )
            assets = market_store.assets(conn)
            # Each asset's stored rows before its start, read before the table may be truncated (and without
            # its indexes: a lookup per asset would scan it).
            stored_before = market_store.daily_context(conn, run.plan.starts)

            def write(truncated: bool | None) -> tuple[BarTally, int, int]:
                tally, repairs, gaps = BarTally(), 0, 0
                for chunk in asset_chunks(context, conn, "price_histories", run.plan.starts, run.window.end):
                    prices = market_store.read_rows_from(
                        conn, "price_histories", chunk, market_store.PRICE_SCHEMA, run.window.end
                    )
                    stored = stored_before.filter(pl.col("asset_id").is_in(list(chunk)))
                    # Implausible rows (edited in by SQL, or loaded under older bounds) become rejects here.
                    daily, repaired = validate_daily(prices, settings.price_bounds)
                    bars = daily_bars(daily, stored, _sessions_of_daily_rows(daily, stored))
                    bars = with_bar_times(bars, assets)
                    starts, end = market_store.keys_from(chunk, [market_store.DAILY_TF]), run.window.end
                    market_store.replace_bars(conn, "1d", [bars], starts, _DAILY_COLUMNS, end, bars.height, truncated)
                    market_store.replace_bar_rejects(conn, chunk, repaired, end)
                    repairs += repaired.height
                    gaps += int(bars["is_missing_days"].sum())
                    written = WrittenBars.of(bars)
                    tally.add(conn, written, prices)
                    run.record_written(written.days, "rows")
                return tally, repairs, gaps

            def rewrite() -> AbstractContextManager[bool]:
                replaced = market_store.keys_from(run.plan.starts, [market_store.DAILY_TF])
                return market_store.bars_truncated_if_replaced(conn, "1d", replaced, run.window.end)

            tally, repairs, gaps = written_in_groups(conn, run, rewrite, write)
            settle(conn, run, ends.changed(conn))
            outcome = _finish(context, conn, run, tally, table, {"repairs": repairs, "gaps_flagged": gaps}, started)
        announce_requeued(context, run)
        yield from outcome

    def family_asset(family: str) -> dg.AssetsDefinition:
        key = BAR_KEYS[family]

        @derived_series(
            key,
            partitions,
            parents=[BAR_KEYS["1d"]],
            dimensions=[dg.AssetDep(DIM_TIMEFRAME, partition_mapping=timeframes_of(family)), DIM_ASSETS],
            check_specs=[*invariant_check_specs(key), quarantine_spec(key)],
            code_version=BARS_CODE_VERSION,
            description=f"Snapshot bars of the {family} family for the active timeframes of market.dim_timeframe: "
            "one row per daily close while a bar forms, canonical (is_partial_end = false) where it completes.",
        )
        def bars_of_family(context: dg.AssetExecutionContext, config: BarsConfig, warehouse: Warehouse):
            started = time.perf_counter()
            table = market_store.qualified(market_store.BAR_TABLES[family])
            with warehouse.transaction() as conn:
                timeframes = family_timeframes(conn, family)
                retired = market_store.retired_timeframes(conn, family)
                run = start_family_run(context, conn, family, "price_bars_1d", config.asset_ids)
                columns = _family_columns(family)
                labels = [t.label for t in timeframes]
                ends = EndStates(conn, run, sql.SQL(table), "price_bars_1d", labels, columns, last_day)
                bounds = settings.price_bounds
                replaced = market_store.keys_from(run.plan.starts, labels + retired)

                def write(truncated: bool | None) -> BarTally:
                    tally = BarTally()

                    def rebuild(starts: dict[int, date]) -> WrittenBars:
                        end = run.window.end
                        return _rebuild_family(conn, family, timeframes, retired, starts, end, bounds, truncated)

                    for chunk in asset_chunks(context, conn, "price_bars_1d", run.plan.starts, run.window.end):
                        for written in build_quarantining(conn, run, chunk, rebuild, truncated):
                            tally.add(conn, written)
                            run.record_written(written.days, "rows")
                    return tally

                def rewrite() -> AbstractContextManager[bool]:
                    return market_store.bars_truncated_if_replaced(conn, family, replaced, run.window.end)

                tally = written_in_groups(conn, run, rewrite, write)
                settle(conn, run, ends.changed(conn))
                extra = {"timeframes": ", ".join(labels)}
                outcome = _finish(context, conn, run, tally, table, extra, started)
            announce_requeued(context, run)
            yield from outcome

        return bars_of_family

    return [price_histories, price_bars_1d, *(family_asset(f) for f in market_store.MULTI_FAMILIES)]


def _finish(
    context: dg.AssetExecutionContext,
    conn: psycopg.Connection,
    run: FamilyRun,
    tally: BarTally,
    table: str,
    extra: dict,
    started: float,
) -> list[dg.AssetCheckResult | dg.MaterializeResult]:
    """What the run reports once its transaction ends: when a blocking invariant failed, the rollback (no
    materialization: the previous rows and the queue stay) and the failed checks; otherwise the run."""
    if tally.failed:
        conn.rollback()
        run.requeued = set()
        return selected_checks(context, tally.check_results())
    metadata = {**tally.metadata(), **extra, "seconds": round(time.perf_counter() - started, 3)}
    return [materialization(context, conn, run, table, metadata, tally.check_results())]


# Daily rows of a group of assets whose bars are computed while the previous group's are stored.
_STREAM_DAILY_ROWS = 40_000


def stream_slices(
    rows: pl.DataFrame, carry: pl.DataFrame, size: int = _STREAM_DAILY_ROWS
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """`rows` (sorted by asset_id) in consecutive slices of whole assets, about `size` rows each, each with the
    rows of `carry` (by asset_id) of its assets."""
    lengths = rows.group_by("asset_id", maintain_order=True).len()["len"]
    group = (lengths.cum_sum() - lengths) // size
    totals = lengths.to_frame().with_columns(group=group).group_by("group", maintain_order=True).sum()["len"]
    offsets = totals.cum_sum() - totals
    slices = [rows.slice(offset, length) for offset, length in zip(offsets, totals, strict=True)]
    return [(part, carry.filter(pl.col("asset_id").is_between(*part["asset_id"][[0, -1]]))) for part in slices]


def _family_columns(family: str) -> list[str]:
    return _BAR_COLUMNS + (["bar_anchor_offset"] if family.startswith("cal_anchor") else [])


def _rebuild_family(
    conn: psycopg.Connection,
    family: str,
    timeframes: list[Timeframe],
    retired: list[str],
    starts: dict[int, date],
    end: date,
    bounds: PriceBounds,
    truncated: bool | None = None,
) -> WrittenBars:
    """Rewrite each asset's bars of every timeframe from its start date to `end`; rows of retired timeframes
    in that span are removed (`truncated`: as for rewrite_rows). Returns what was written; raises
    ImplausibleInput for assets whose daily bars are outside `bounds`.

    Only daily rows from the start date on are read: a bar in progress continues from its last stored
    snapshot row (the carry). Stored rows before the start are right, since a snapshot depends on nothing
    later than its own date, so a one-day refresh costs one day whatever the history behind it.
    """
    if not starts:
        return WrittenBars.concat([])
    context = market_store.daily_context(conn, starts)
    rewrite_from = market_store.keys_from(starts, [t.label for t in timeframes] + retired)
    # A table truncated for this run holds no row before any start (and, without its index, a lookup per key
    # would scan it).
    carry = (
        pl.DataFrame(schema=CARRY_SCHEMA)
        if truncated
        else market_store.last_snapshots_before(conn, family, rewrite_from)
    )
    for timeframe in (t for t in timeframes if t.unit == "D"):
        # A block's first date (its bar_start) is the date of its first row.
        first_seq = context.select(
            "asset_id", bar_seq=(pl.col("rows_before") // timeframe.n) * timeframe.n + 1, before="from_date"
        )
        block_start = market_store.dates_of_bar_seq(conn, first_seq).select(
            "asset_id", block_start="from_date", tf=pl.lit(timeframe.label)
        )
        carry = (
            carry.join(block_start, on=["asset_id", "tf"], how="left")
            .with_columns(bar_start=pl.coalesce("bar_start", "block_start"))
            .drop("block_start")
        )
    assets = market_store.assets(conn)
    daily = (
        market_store.read_rows_from(conn, "price_bars_1d", starts, market_store.DAILY_BAR_SCHEMA, end)
        .with_columns(row_index=pl.col("bar_seq") - 1)
        .drop("bar_seq")
        .join(context.select("asset_id", "first_trade_date"), on="asset_id")
        .join(assets.select("asset_id", "calendar"), on="asset_id")
    )
    if implausible := implausible_assets(daily, list(PRICES), bounds):
        raise ImplausibleInput(implausible)
    columns = _family_columns(family)
    if daily.is_empty() or not timeframes:
        market_store.replace_bars(conn, family, [], rewrite_from, [], end, 0, truncated)
        return WrittenBars.concat([])
    years = max((t.n for t in timeframes if t.unit == "Y"), default=1)
    sessions = session_table(
        daily["calendar"].unique().to_list(),
        date(daily["first_trade_date"].min().year - years - 1, 1, 1),
        date(daily["trade_date"].max().year + years + 1, 12, 31),
    )
    ordered = market_store.timeframes_in_key_order(conn, timeframes)
    written = []

    def built() -> Iterator[pl.DataFrame]:
        # A group of assets at a time, in the primary key's order: the server stores one group while the next
        # is computed and checked.
        for part, part_carry in stream_slices(daily, carry):
            bars = market_store.in_key_order(
                [
                    with_bar_times(
                        (multi_tf_bars if t.unit == "D" else calendar_bars)(part, t, sessions, part_carry), assets
                    )
                    for t in ordered
                ]
            )
            written.append(WrittenBars.of(bars))
            yield bars

    # A snapshot row per daily row and timeframe.
    expected = daily.height * len(timeframes)
    market_store.replace_bars(conn, family, built(), rewrite_from, columns, end, expected, truncated)
    return WrittenBars.concat(written)
