"""Reads and writes of the `market` tables. Each function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.bars import CARRY_SCHEMA
from trading_assets.compute.calendars import Timeframe
from trading_assets.compute.rebuild import Window
from trading_assets.compute.validation import symbol_of
from trading_assets.io import row_counts
from trading_assets.io.postgres import (
    copy_frame,
    copy_frames,
    filled_scratch_table,
    indexes_built_after,
    read_frame,
    scratch_table,
)
from trading_assets.sources import price_files

BAR_TABLES = {
    "1d": "price_bars_1d",
    "multi_tf": "price_bars_multi_tf",
    "cal_iso": "price_bars_multi_tf_cal_iso",
    "cal_us": "price_bars_multi_tf_cal_us",
    "cal_anchor_iso": "price_bars_multi_tf_cal_anchor_iso",
    "cal_anchor_us": "price_bars_multi_tf_cal_anchor_us",
}
MULTI_FAMILIES = [f for f in BAR_TABLES if f != "1d"]
# The one timeframe of price_bars_1d (its check constraint).
DAILY_TF = "1D"
# Scratch table of per (asset, timeframe) start dates, keyed for the lookups of an asset's starts.
TF_STARTS = "(asset_id integer, tf text, from_date date, primary key (asset_id, tf))"


def _from_dates(starts: dict[int, date]) -> pl.DataFrame:
    return pl.DataFrame(
        {"asset_id": list(starts), "from_date": list(starts.values())},
        schema={"asset_id": pl.Int64, "from_date": pl.Date},
    )


def keys_from(starts: dict[int, date], labels: list[str]) -> pl.DataFrame:
    """(asset_id, from_date, tf): each asset's start date for every timeframe of `labels` (the rows of TF_STARTS)."""
    return _from_dates(starts).join(pl.DataFrame({"tf": labels}, schema={"tf": pl.String}), how="cross")


def qualified(table: str) -> str:
    """The schema-qualified name of a market table, as ops.partition_rows and the UI know it."""
    return f"market.{table}"


@dataclass(frozen=True)
class PriceUpsert:
    inserted: int
    revised: int
    unchanged: int


def ensure_asset(
    conn: psycopg.Connection,
    symbol: str,
    timezone: str | None = None,
    calendar: str | None = None,
    asset_class: str | None = None,
    catalog_symbol: str | None = None,
) -> tuple[int, str, str]:
    """(asset_id, timezone, calendar) of `symbol`, created on first load; given attributes are updated.

    A `catalog_symbol` (EXCHANGE:SYMBOL) links the asset to the symbol catalog, whose current version's
    timezone and exchange calendar apply unless given here.
    """
    symbol = symbol_of(symbol)
    if catalog_symbol is not None:
        linked = _catalog_listing(conn, catalog_symbol)
        timezone, calendar = timezone or linked[0], calendar or linked[1]
    # A new asset is created with its attributes (an update would count as a change of an existing one).
    conn.execute(
        "insert into market.dim_assets (symbol, timezone, calendar, asset_class, catalog_symbol) values "
        "(%s, coalesce(%s, 'UTC'), coalesce(%s, '24/7'), coalesce(%s, ''), %s) on conflict (symbol) do nothing",
        (symbol, timezone, calendar, asset_class, catalog_symbol),
    )
    conn.execute(
        "update market.dim_assets set timezone = coalesce(%s, timezone), calendar = coalesce(%s, calendar), "
        "asset_class = coalesce(%s, asset_class), catalog_symbol = coalesce(%s, catalog_symbol) where symbol = %s "
        "and (timezone, calendar, asset_class, catalog_symbol) is distinct from "
        "(coalesce(%s, timezone), coalesce(%s, calendar), coalesce(%s, asset_class), coalesce(%s, catalog_symbol))",
        (timezone, calendar, asset_class, catalog_symbol, symbol, timezone, calendar, asset_class, catalog_symbol),
    )
    return conn.execute(
        "select asset_id, timezone, calendar from market.dim_assets where symbol = %s", (symbol,)
    ).fetchone()


def _catalog_listing(conn: psycopg.Connection, catalog_symbol: str) -> tuple[str | None, str | None]:
    linked = conn.execute(
        "select s.timezone, e.calendar from catalog.symbols s left join catalog.exchanges e "
        "on e.exchange = s.exchange and e.valid_until is null where s.symbol = %s and s.valid_until is null",
        (catalog_symbol,),
    ).fetchone()
    if linked is None:
        raise ValueError(f"{catalog_symbol!r} is not in the symbol catalog (load it with `load symbols`)")
    return linked


def asset_timezone(
    conn: psycopg.Connection, symbol: str, timezone: str | None = None, catalog_symbol: str | None = None
) -> str:
    """The timezone a load of `symbol` with these options reads its file in (what ensure_asset would
    settle), without writing anything."""
    if timezone:
        return timezone
    if catalog_symbol is not None and (listed := _catalog_listing(conn, catalog_symbol)[0]):
        return listed
    stored = conn.execute("select timezone from market.dim_assets where symbol = %s", (symbol_of(symbol),)).fetchone()
    return stored[0] if stored else "UTC"


def assets(conn: psycopg.Connection) -> pl.DataFrame:
    return read_frame(
        conn,
        "select asset_id, symbol, timezone, calendar from market.dim_assets order by asset_id",
        schema={"asset_id": pl.Int64, "symbol": pl.String, "timezone": pl.String, "calendar": pl.String},
    )


def symbols_of(conn: psycopg.Connection, asset_ids: list[int]) -> list[str]:
    """The symbols of `asset_ids`, in their order."""
    rows = conn.execute(
        "select a.symbol from unnest(%s::int[]) with ordinality as u (asset_id, n) "
        "join market.dim_assets a using (asset_id) order by u.n",
        (asset_ids,),
    ).fetchall()
    return [symbol for (symbol,) in rows]


def upsert_prices(conn: psycopg.Connection, asset_id: int, prices: pl.DataFrame) -> PriceUpsert:
    """Insert new rows and revise changed ones; the asset is marked dirty from the earliest change."""
    scratch_table(conn, "incoming_prices", "(like market.price_histories including defaults)")
    columns = ["trade_date", "ts", "open", "high", "low", "close", "volume", "source_file", "source_line"]
    copy_frame(
        conn,
        sql.SQL("incoming_prices"),
        prices.rename({"line": "source_line"}).with_columns(asset_id=pl.lit(asset_id)),
        ["asset_id", *columns],
    )
    changed = conn.execute(
        """
        insert into market.price_histories as p
            (asset_id, trade_date, ts, open, high, low, close, volume, source_file, source_line)
        select asset_id, trade_date, ts, open, high, low, close, volume, source_file, source_line
        from incoming_prices
        on conflict (asset_id, trade_date) do update
            set ts = excluded.ts, open = excluded.open, high = excluded.high, low = excluded.low,
                close = excluded.close, volume = excluded.volume, source_file = excluded.source_file,
                source_line = excluded.source_line, loaded_at = now()
            where (p.ts, p.open, p.high, p.low, p.close, p.volume)
                  is distinct from (excluded.ts, excluded.open, excluded.high, excluded.low, excluded.close,
                                    excluded.volume)
        returning trade_date, (xmax = 0) as inserted
        """
    ).fetchall()
    if changed:
        mark_dirty(conn, "1d", {asset_id: min(d for d, _ in changed)})
    new_rows = pl.DataFrame({"trade_date": [day for day, is_new in changed if is_new]}, schema={"trade_date": pl.Date})
    row_counts.record_changes(
        conn,
        qualified("price_histories"),
        row_counts.rows_by_month(new_rows),
        pl.DataFrame(schema=row_counts.MONTH_ROWS),
    )
    inserted = new_rows.height
    return PriceUpsert(inserted=inserted, revised=len(changed) - inserted, unchanged=prices.height - len(changed))


def record_load_rejects(conn: psycopg.Connection, rejects: pl.DataFrame) -> int:
    """Rows refused at load (file, line, reason); loading the same file again replaces them."""
    if rejects.is_empty():
        return 0
    scratch_table(
        conn,
        "incoming_rejects",
        "(asset_id integer, symbol text, trade_date date, source_file text, source_line integer, stage text, "
        "reason text, open float8, high float8, low float8, close float8, volume float8)",
    )
    columns = ["asset_id", "symbol", "trade_date", "source_file", "source_line", "reason"]
    columns += [c for c in ("open", "high", "low", "close", "volume") if c in rejects.columns]
    copy_frame(conn, sql.SQL("incoming_rejects"), rejects.with_columns(stage=pl.lit("load")), [*columns, "stage"])
    listed = sql.SQL(", ").join(map(sql.Identifier, [*columns, "stage"]))
    conn.execute(
        sql.SQL(
            "insert into market.price_rejects ({cols}) select {cols} from incoming_rejects "
            "on conflict (source_file, source_line) where stage = 'load' do update "
            "set reason = excluded.reason, trade_date = excluded.trade_date, rejected_at = now()"
        ).format(cols=listed)
    )
    return rejects.height


def mark_dirty(conn: psycopg.Connection, family: str, dirty_from: dict[int, date]) -> None:
    """Mark assets stale in `family` from the given dates (an earlier existing mark wins)."""
    if not dirty_from:
        return
    # One statement for all assets: a statement per asset took 0.17-0.44 s for 1,000 assets of seven families.
    conn.execute(
        "insert into market.bars_dirty (family, asset_id, dirty_from) "
        "select %s, asset_id, dirty_from from unnest(%s::int[], %s::date[]) as d (asset_id, dirty_from) "
        "on conflict (family, asset_id) do update set dirty_from = least(bars_dirty.dirty_from, excluded.dirty_from)",
        (family, list(dirty_from), list(dirty_from.values())),
    )


def lock_marks(conn: psycopg.Connection, families: list[str]) -> None:
    """Lock the change marks of `families` (those this run marks when it is done) for this transaction, before
    the run rewrites its table. Their runs lock their marks before they read this table: taking the marks
    first keeps one order (marks, then tables) in every run, so that two runs wait for each other instead of
    deadlocking (one holding this table truncated while it waits for the marks, the other holding the marks
    while it waits to read this table)."""
    if families:
        conn.execute("select from market.bars_dirty where family = any(%s) for update", (families,))


def earliest_pending(conn: psycopg.Connection, families: list[str]) -> date | None:
    """The earliest date from which any of `families` has changes waiting."""
    return conn.execute("select min(dirty_from) from market.bars_dirty where family = any(%s)", (families,)).fetchone()[
        0
    ]


def pending_marks(conn: psycopg.Connection, family: str) -> dict[int, date]:
    """The change marks of `family`, locked until the caller's transaction ends (it settles them or not)."""
    rows = conn.execute(
        "select asset_id, dirty_from from market.bars_dirty where family = %s for update", (family,)
    ).fetchall()
    return dict(rows)


def settle_marks(conn: psycopg.Connection, family: str, settled: set[int], requeued: dict[int, date]) -> None:
    """Remove the marks whose changes the run applied; queue `requeued` assets again from their dates."""
    # Typed int[] as the column: a list of small ids is sent as smallint[], and an integer compared with it finds
    # each row by a linear search of the array (10,000 assets: 0.18 s per family, against 4 ms hashed).
    conn.execute(
        "delete from market.bars_dirty where family = %s and asset_id = any(%s::int[])", (family, sorted(settled))
    )
    mark_dirty(conn, family, requeued)


def record_refresh_state(conn: psycopg.Connection, family: str, run_id: str, state: pl.DataFrame) -> None:
    """What run `run_id` of `family` did per asset (`state`: asset_id, rows, first_date, last_date)."""
    filled_scratch_table(
        conn,
        "refresh_done",
        "(asset_id integer, rows bigint, first_date date, last_date date)",
        state,
        ["asset_id", "rows", "first_date", "last_date"],
    )
    conn.execute(
        """
        insert into market.refresh_state as s (family, asset_id, last_run_id, last_run_at, rows_last_written,
                                               first_date_written, last_date_written)
        select %s, asset_id, %s, now(), rows, first_date, last_date from refresh_done
        on conflict (family, asset_id) do update set
            last_run_id = excluded.last_run_id, last_run_at = excluded.last_run_at,
            rows_last_written = excluded.rows_last_written, first_date_written = excluded.first_date_written,
            last_date_written = excluded.last_date_written
        """,
        (family, run_id),
    )


def assets_with_rows(conn: psycopg.Connection, table: str, window: Window) -> list[int]:
    """Assets with rows of market.`table` inside `window` (index lookups, one per asset)."""
    query = sql.SQL(
        "select a.asset_id from market.dim_assets a where exists (select 1 from market.{} t "
        "where t.asset_id = a.asset_id and t.trade_date >= %s and t.trade_date < %s) order by 1"
    ).format(sql.Identifier(table))
    return [asset_id for (asset_id,) in conn.execute(query, (window.first_day, window.end))]


def assets_with_rows_from(conn: psycopg.Connection, table: str, asset_ids: list[int], day: date) -> list[int]:
    """Those of `asset_ids` with rows of market.`table` on or after `day`."""
    query = sql.SQL(
        "select a.asset_id from unnest(%s::int[]) as a (asset_id) where exists "
        "(select 1 from market.{} t where t.asset_id = a.asset_id and t.trade_date >= %s)"
    ).format(sql.Identifier(table))
    return [asset_id for (asset_id,) in conn.execute(query, (asset_ids, day))]


def end_states(
    conn: psycopg.Connection, table: sql.Composable, keys: pl.DataFrame, day: date, columns: list[str]
) -> pl.DataFrame:
    """Per (asset_id, tf) of `keys`, a digest of `columns` of its last row of `table` before `day`: the state
    the rows from `day` on continue from."""
    filled_scratch_table(conn, "state_keys", "(asset_id integer, tf text)", keys.select("asset_id", "tf"))
    query = sql.SQL(
        "select r.asset_id, r.tf, md5(row({cols})::text) from state_keys r cross join lateral (select * from {t} t "
        "where t.asset_id = r.asset_id and t.tf = r.tf and t.trade_date < %s order by t.trade_date desc limit 1) l"
    ).format(cols=sql.SQL(", ").join(sql.SQL("l.") + sql.Identifier(c) for c in columns), t=table)
    with conn.cursor() as cur:
        cur.execute(query, (day,))
        return pl.DataFrame(
            cur.fetchall(), schema={"asset_id": pl.Int64, "tf": pl.String, "state": pl.String}, orient="row"
        )


def last_rows_before(table: sql.Composable, keys: str, before: sql.Composable, columns: list[str]) -> sql.Composable:
    """A query of the last row of `table` dated before `before` (a date: a literal, or an expression of the key
    `r`) for each (asset_id, tf) of the scratch table `keys` (TF_STARTS): r.asset_id, r.tf and the row's `columns`.
    Keys with no such row are left out.

    The tables are keyed (asset_id, trade_date, tf), and an asset has a row of each of its timeframes on each of
    its days, so the asset's last day before the date holds the last row of all its keys: one lookup of that day
    and one read of its rows per asset, instead of a lookup per key (10,000 assets, warm: the carry of the
    multi_tf bars 0.26 s against 0.44 s). A key without a row that day (its rows ended earlier, or start later)
    is looked up on its own.
    """
    names = {
        "t": table,
        "keys": sql.Identifier(keys),
        "before": before,
        "cols": sql.SQL(", ").join(sql.SQL("l.") + sql.Identifier(c) for c in columns),
    }
    # `offset 0` keeps the planner from flattening the per-asset and per-key reads into scans of the table.
    return sql.SQL(
        "with days as materialized (select g.asset_id, g.before, (select max(t.trade_date) from {t} t "
        "where t.asset_id = g.asset_id and t.trade_date < g.before) as day "
        "from (select distinct r.asset_id, {before} as before from {keys} r) g), "
        "found as materialized (select r.asset_id, r.tf, {cols} from (select d.before, t.* from days d "
        "cross join lateral (select * from {t} t where t.asset_id = d.asset_id and t.trade_date = d.day offset 0) t "
        "offset 0) l join {keys} r on r.asset_id = l.asset_id and r.tf = l.tf and {before} = l.before) "
        "select * from found union all "
        "select r.asset_id, r.tf, {cols} from (select * from {keys} r where not exists (select from found f "
        "where f.asset_id = r.asset_id and f.tf = r.tf) offset 0) r cross join lateral (select * from {t} t "
        "where t.asset_id = r.asset_id and t.tf = r.tf and t.trade_date < {before} "
        "order by t.trade_date desc limit 1) l"
    ).format(**names)


def changed_states(before: pl.DataFrame, after: pl.DataFrame) -> set[int]:
    """Assets with an (asset_id, tf) whose end state differs between two reads of end_states."""
    differing = pl.concat([before, after]).group_by("asset_id", "tf", "state").len().filter(pl.col("len") == 1)
    return set(differing["asset_id"].to_list())


def starts_table(conn: psycopg.Connection, starts: dict[int, date]) -> None:
    """The scratch table rebuild_from (asset_id, from_date) holding each asset's start date."""
    filled_scratch_table(conn, "rebuild_from", "(asset_id integer, from_date date)", _from_dates(starts))


def read_rows_from(
    conn: psycopg.Connection, table: str, starts: dict[int, date], schema: dict[str, pl.DataType], end: date
) -> pl.DataFrame:
    """Rows of market.`table` of each asset from its start date to `end` (excluded), ordered by asset and date."""
    columns = list(schema)
    starts_table(conn, starts)
    # One index range scan per asset (`offset 0` keeps the planner from flattening the lateral subquery into
    # a scan of the whole table: it cannot tell that a one-day refresh wants one row per asset).
    query = sql.SQL(
        "select {cols} from rebuild_from r cross join lateral (select * from market.{table} t "
        "where t.asset_id = r.asset_id and t.trade_date >= r.from_date and t.trade_date < {end} offset 0) t "
        "order by t.asset_id, t.trade_date"
    ).format(
        cols=sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in columns),
        table=sql.Identifier(table),
        end=sql.Literal(end),
    )
    return read_frame(conn, query, schema=schema)


def days_to_rebuild(conn: psycopg.Connection, source: str, starts: dict[int, date], end: date) -> dict[int, int]:
    """Per asset, the days from its start date to its last row in market.`source` before `end`."""
    starts_table(conn, starts)
    query = sql.SQL(
        "select r.asset_id, coalesce((select max(t.trade_date) from market.{} t where t.asset_id = r.asset_id "
        "and t.trade_date < %s) - r.from_date + 1, 0) from rebuild_from r"
    ).format(sql.Identifier(source))
    return dict(conn.execute(query, (end,)).fetchall())


def daily_context(conn: psycopg.Connection, starts: dict[int, date]) -> pl.DataFrame:
    """Per asset: its calendar, the rows of price_bars_1d before its start (the row index to continue from),
    the last of their dates, and its first date."""
    starts_table(conn, starts)
    return read_frame(
        conn,
        """
        select r.asset_id, r.from_date, a.calendar,
               coalesce(last.bar_seq, 0) as rows_before, last.trade_date as previous_trade_date,
               (select min(b.trade_date) from market.price_bars_1d b where b.asset_id = r.asset_id) as first_trade_date
        from rebuild_from r
        join market.dim_assets a using (asset_id)
        left join lateral (
            select b.bar_seq, b.trade_date from market.price_bars_1d b
            where b.asset_id = r.asset_id and b.trade_date < r.from_date
            order by b.trade_date desc limit 1
        ) last on true
        """,
        schema={
            "asset_id": pl.Int64,
            "from_date": pl.Date,
            "calendar": pl.String,
            "rows_before": pl.Int64,
            "previous_trade_date": pl.Date,
            "first_trade_date": pl.Date,
        },
    )


def labels_in_key_order(conn: psycopg.Connection, labels: list[str]) -> list[str]:
    """Timeframe labels in the order the tables' primary keys sort them (the database's collation)."""
    return [label for (label,) in conn.execute("select tf from unnest(%s::text[]) tf order by tf", (labels,))]


def timeframes_in_key_order(conn: psycopg.Connection, timeframes: list[Timeframe]) -> list[Timeframe]:
    order = labels_in_key_order(conn, [t.label for t in timeframes])
    return sorted(timeframes, key=lambda t: order.index(t.label))


def in_key_order(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Frames of one group of assets as one frame in the primary key's order (asset, date, tf): a stable sort by
    asset and date, so the frames must bring each (asset, date)'s rows in timeframes_in_key_order (one frame per
    timeframe in that order, or one frame in (asset, tf, date) order). A whole-table rewrite builds its indexes
    after the COPY, and the server sorts rows that come in that order in two thirds of the time (2.2 M packed
    EMA rows: 0.87 s against 1.36 s)."""
    return pl.concat(frames).sort("asset_id", "trade_date", maintain_order=True)


def replace_bars(
    conn: psycopg.Connection,
    family: str,
    frames: Iterable[pl.DataFrame],
    starts: pl.DataFrame,
    columns: list[str],
    end: date,
    expected_rows: int,
    truncated: bool | None = None,
) -> int:
    """Delete each (asset, tf)'s rows from its start date to `end` (`starts`: asset_id, tf, from_date) and COPY
    the rows of `frames` (inside the same dates; about `expected_rows`), each stored while the next is made;
    `truncated` as for rewrite_rows."""
    table = BAR_TABLES[family]
    return rewrite_rows(
        conn, f"market.{table}", qualified(table), starts, frames, columns, end, expected_rows, truncated=truncated
    )


def bars_truncated_if_replaced(
    conn: psycopg.Connection, family: str, starts: pl.DataFrame, end: date
) -> AbstractContextManager[bool]:
    """truncated_if_replaced for the bar table of `family`."""
    table = BAR_TABLES[family]
    return truncated_if_replaced(conn, f"market.{table}", qualified(table), starts, end)


def rewrite_rows(
    conn: psycopg.Connection,
    table: str,
    counted_as: str,
    starts: pl.DataFrame,
    frames: Iterable[pl.DataFrame],
    columns: list[str],
    end: date,
    expected_rows: int,
    weight_column: str | None = None,
    weight: sql.Composable | None = None,
    truncated: bool | None = None,
) -> int:
    """Delete each (asset, tf)'s rows of `table` (schema.table) from its from_date in `starts` to `end` and COPY
    the `columns` of `frames`, each stored while the next is made; the rows per month of `counted_as` follow.
    A row counts as `weight` in the table (as `weight_column` of a frame's row): one, or its EMA values.

    `truncated`: whether the run truncated the table for all its rewrites (`truncated_if_replaced`); None: this
    rewrite alone truncates it if it replaces every row.
    """
    if truncated is None:
        with truncated_if_replaced(conn, table, counted_as, starts, end) as whole:
            return rewrite_rows(
                conn, table, counted_as, starts, frames, columns, end, expected_rows, weight_column, weight, whole
            )
    target = sql.Identifier(*table.split("."))
    if truncated:
        removed = pl.DataFrame(schema=row_counts.MONTH_ROWS)
    else:
        filled_scratch_table(conn, "replace_from", TF_STARTS, starts, ["asset_id", "tf", "from_date"])
        removed = delete_rows(conn, target, "replace_from", end, expected_rows, weight or _ONE_ROW)
    added = []

    def counted() -> Iterator[pl.DataFrame]:
        for frame in frames:
            added.append(row_counts.rows_by_month(frame, weight_column))
            yield frame

    written = copy_frames(conn, target, counted(), columns, freeze=truncated)
    row_counts.record_changes(
        conn, counted_as, pl.concat([pl.DataFrame(schema=row_counts.MONTH_ROWS), *added]), removed
    )
    return written


@contextmanager
def truncated_if_replaced(
    conn: psycopg.Connection, table: str, counted_as: str, starts: pl.DataFrame, end: date
) -> Iterator[bool]:
    """Around the rewrites of `table` (schema.table) that replace each (asset, tf) of `starts` from its from_date
    to `end`: whether that is every row of the table (a first build, a full rebuild). If so, the table is
    truncated here and its indexes are built again when the block ends, and the rewrites inside COPY frozen rows
    and delete nothing (`rewrite_rows(truncated=True)`, in the same subtransaction: no savepoint between).

    No dead rows, and no later pass that sets hint bits on every page or freezes it (a rebuilt EMA family:
    14 s -> 6 s). A run that writes its assets in several groups decides once for all of them: each group
    alone would replace only its own rows, and delete them and insert through the indexes (a 1,000-asset
    rebuild of the daily bars: 46 s). TRUNCATE locks the table until the commit, as the index rebuild did; a
    transaction whose snapshot is older than the commit reads the new rows (frozen rows are visible to every
    snapshot), not the ones its snapshot saw.
    """
    target = sql.Identifier(*table.split("."))
    filled_scratch_table(conn, "replace_from", TF_STARTS, starts, ["asset_id", "tf", "from_date"])
    if starts.is_empty() or not _replaces_every_row(conn, target, "replace_from", end):
        yield False
        return
    row_counts.record_changes(
        conn, counted_as, pl.DataFrame(schema=row_counts.MONTH_ROWS), row_counts.rows_per_month(conn, counted_as)
    )
    conn.execute(sql.SQL("truncate {}").format(target))
    with indexes_built_after(conn, table):
        yield True


def _replaces_every_row(conn: psycopg.Connection, table: sql.Composable, starts: str, end: date) -> bool:
    """Whether every row of `table` lies in a range the rewrite replaces (its key's from_date in the scratch
    table `starts` to `end`)."""
    return conn.execute(_key_walk(conn, table, starts, end)).fetchone()[0]


def _key_walk(conn: psycopg.Connection, table: sql.Composable, starts: str, end: date) -> sql.Composable:
    """The query behind `_replaces_every_row`.

    The market tables are keyed by asset_id, then trade_date (then tf). Their assets are walked through the
    primary key, and the walk stops at the first asset not covered: a few probes for a refresh. An asset is
    covered when its last row lies before `end`, each of its rows before its latest from_date has a start at or
    before it (none, when its timeframes start together), and each of its keyed timeframes is named: one pass
    over its index entries, so a full rewrite reads the key once, not the rows (1.8 M rows: 0.45 s, against
    2.6 s for an anti-join of the table). An order other than the key's would sort each asset's rows at every
    step.
    """
    keyed_tf = "tf" in _primary_key(conn, table)
    every_tf_named = sql.SQL(
        " and not exists (select from {t} x where x.asset_id = {a}.asset_id "
        "and x.tf <> all(array(select r.tf from {s} r where r.asset_id = {a}.asset_id)))"
    )

    def covered(alias: str) -> sql.Composable:
        names = {"a": sql.Identifier(alias), "t": table, "s": sql.Identifier(starts)}
        return sql.SQL(
            "(select max(l.trade_date) from {t} l where l.asset_id = {a}.asset_id) < {end} "
            "and not exists (select from {t} x where x.asset_id = {a}.asset_id and x.trade_date < "
            "(select coalesce(max(r.from_date), 'infinity') from {s} r where r.asset_id = {a}.asset_id) "
            "and not exists (select from {s} r where r.asset_id = x.asset_id {same_tf}and r.from_date <= x.trade_date))"
            "{every_tf_named}"
        ).format(
            **names,
            end=sql.Literal(end),
            same_tf=sql.SQL("and r.tf = x.tf " if keyed_tf else ""),
            every_tf_named=every_tf_named.format(**names) if keyed_tf else sql.SQL(""),
        )

    return sql.SQL(
        "with recursive k as ("
        "(select f.asset_id, {first_covered} as covered from "
        "(select asset_id from {t} order by asset_id limit 1) f) "
        "union all "
        "select n.asset_id, {next_covered} from k cross join lateral (select x.asset_id from {t} x "
        "where x.asset_id > k.asset_id order by x.asset_id limit 1) n "
        "where k.covered) "
        "select coalesce(bool_and(covered), true) from k"
    ).format(t=table, first_covered=covered("f"), next_covered=covered("n"))


def _primary_key(conn: psycopg.Connection, table: sql.Composable) -> list[str]:
    """The columns of `table`'s primary key, in order."""
    rows = conn.execute(
        "select a.attname from pg_index i cross join unnest(i.indkey) with ordinality k (attnum, position) "
        "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum "
        "where i.indrelid = %s::regclass and i.indisprimary order by k.position",
        (table.as_string(conn),),
    ).fetchall()
    return [name for (name,) in rows]


# Up to this many rows, a rewrite deletes by one index range scan per (asset, tf).
_FEW_ROWS = 500_000
_ONE_ROW = sql.SQL("1")


def delete_rows(
    conn: psycopg.Connection,
    table: sql.Composable,
    starts: str,
    end: date,
    expected_rows: int,
    weight: sql.Composable = _ONE_ROW,
) -> pl.DataFrame:
    """Delete each (asset_id, tf)'s rows of `table` from its from_date in the scratch table `starts` to `end`
    (excluded); returns (month, rows) deleted, each row counted as `weight` (an expression of its columns).

    The planner cannot know that a one-day refresh deletes one row per key (it guesses a third of each
    key's history) and joins against a scan of the whole table, which grows with history; so a rewrite
    expected to be small names its rows by index lookups instead.
    """
    if expected_rows <= _FEW_ROWS:
        delete = sql.SQL(
            "delete from {t} where ctid = any(array(select x.ctid from {s} r cross join lateral "
            "(select ctid from {t} x where x.asset_id = r.asset_id and x.tf = r.tf "
            "and x.trade_date >= r.from_date and x.trade_date < {end} offset 0) x))"
        )
    else:
        delete = sql.SQL(
            "delete from {t} t using {s} r where t.asset_id = r.asset_id and t.tf = r.tf "
            "and t.trade_date >= r.from_date and t.trade_date < {end}"
        )
    query = sql.SQL(
        "with removed as ({delete} returning trade_date, {weight}::bigint as rows) "
        "select date_trunc('month', trade_date)::date, sum(rows)::bigint from removed group by 1"
    ).format(delete=delete.format(t=table, s=sql.Identifier(starts), end=sql.Literal(end)), weight=weight)
    with conn.cursor() as cur:
        cur.execute(query)
        return pl.DataFrame(cur.fetchall(), schema=row_counts.MONTH_ROWS, orient="row")


def replace_bar_rejects(conn: psycopg.Connection, starts: dict[int, date], rejects: pl.DataFrame, end: date) -> int:
    """Repairs of daily bars are recorded as rejects with their reason; rebuilt dates replace theirs."""
    starts_table(conn, starts)
    conn.execute(
        "delete from market.price_rejects p using rebuild_from r where p.stage = 'bars_1d' "
        "and p.asset_id = r.asset_id and p.trade_date >= r.from_date and p.trade_date < %s",
        (end,),
    )
    if rejects.is_empty():
        return 0
    columns = ["asset_id", "trade_date", "source_file", "source_line", "reason", "open", "high", "low", "close"]
    columns.append("volume")
    return copy_frame(
        conn,
        sql.SQL("market.price_rejects"),
        rejects.rename({"reject_reason": "reason"}).with_columns(stage=pl.lit("bars_1d")),
        [*columns, "stage"],
    )


def active_timeframes(conn: psycopg.Connection, family: str) -> list[str]:
    return [
        tf
        for (tf,) in conn.execute(
            "select tf from market.dim_timeframe where family = %s and is_active order by sort_order, tf", (family,)
        )
    ]


def retired_timeframes(conn: psycopg.Connection, family: str) -> list[str]:
    """Timeframes of `family` set inactive: a rebuild removes their rows."""
    return [
        tf
        for (tf,) in conn.execute(
            "select tf from market.dim_timeframe where family = %s and not is_active order by tf", (family,)
        )
    ]


# Rows of price_histories that daily bars are built from: what the readers produce, per asset (the source's
# timestamp stays behind: a daily bar is the trading date's).
PRICE_SCHEMA = {
    "asset_id": pl.Int64,
    **{
        ("source_line" if name == "line" else name): dtype
        for name, dtype in price_files.PRICE_SCHEMA.items()
        if name != "ts"
    },
}
DAILY_BAR_SCHEMA = {**{k: v for k, v in PRICE_SCHEMA.items() if not k.startswith("source")}, "bar_seq": pl.Int64}


def last_snapshots_before(conn: psycopg.Connection, family: str, starts: pl.DataFrame) -> pl.DataFrame:
    """Per (asset_id, tf) of `starts` (with from_date), the stored snapshot row just before from_date: the
    state a bar in progress carries into its rebuilt rows."""
    filled_scratch_table(conn, "carry_from", TF_STARTS, starts, ["asset_id", "tf", "from_date"])
    schema = {k: v for k, v in CARRY_SCHEMA.items() if k != "bar_start"}
    table = sql.SQL("market.{}").format(sql.Identifier(BAR_TABLES[family]))
    carried = [c for c in schema if c not in ("asset_id", "tf")]
    query = last_rows_before(table, "carry_from", sql.SQL("r.from_date"), carried)
    return read_frame(conn, query, schema=schema).with_columns(bar_start=pl.lit(None, pl.Date))


def dates_of_bar_seq(conn: psycopg.Connection, wanted: pl.DataFrame) -> pl.DataFrame:
    """trade_date of daily bars by (asset_id, bar_seq) as `from_date`, among each asset's rows before its
    `before` date (later rows may still be numbered as before a late row renumbered the earlier ones)."""
    filled_scratch_table(
        conn,
        "wanted_seq",
        "(asset_id integer, bar_seq integer, before date)",
        wanted,
        ["asset_id", "bar_seq", "before"],
    )
    return read_frame(
        conn,
        "select w.asset_id, w.bar_seq, b.trade_date as from_date from wanted_seq w "
        "join market.price_bars_1d b on b.asset_id = w.asset_id and b.bar_seq = w.bar_seq and b.trade_date < w.before",
        schema={"asset_id": pl.Int64, "bar_seq": pl.Int64, "from_date": pl.Date},
    )


def rows_without_prices(
    conn: psycopg.Connection, days: pl.DataFrame, prices: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The (asset_id, trade_date, rows) of `days` (bar rows just stored, per asset and date) on a date with no
    loaded price: bars newer than prices. `prices`: the price rows (asset_id, trade_date) this transaction built
    them from, when the caller holds them (the daily bars': the prices it read are the ones a read would find)."""
    schema = {"asset_id": pl.Int64, "trade_date": pl.Date, "rows": pl.Int64}
    if days.is_empty():
        return pl.DataFrame(schema=schema)
    days = days.cast(schema)
    if prices is None:
        # The price dates of each asset over the span it was written, compared here: one range scan per asset
        # instead of a lookup per written day.
        filled_scratch_table(
            conn,
            "written_spans",
            "(asset_id integer, first_date date, last_date date)",
            days.group_by("asset_id").agg(first_date=pl.col("trade_date").min(), last_date=pl.col("trade_date").max()),
        )
        prices = read_frame(
            conn,
            "select p.asset_id, p.trade_date from written_spans w join market.price_histories p "
            "on p.asset_id = w.asset_id and p.trade_date between w.first_date and w.last_date",
            schema={"asset_id": pl.Int64, "trade_date": pl.Date},
        )
    priced = prices.select(pl.col("asset_id").cast(pl.Int64), "trade_date")
    return (
        days.join(priced, on=["asset_id", "trade_date"], how="anti").sort("asset_id", "trade_date").select(list(schema))
    )
