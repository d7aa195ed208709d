"""Reads and writes of the EMA tables (stored packed: one row per asset, timeframe and date with one
array element per period). Each function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import date

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.ema import GRID_SCHEMA, carry_schema, ema_columns, values_per_row
from trading_assets.io.market_store import (
    BAR_TABLES,
    DAILY_TF,
    TF_STARTS,
    in_key_order,
    labels_in_key_order,
    last_rows_before,
    qualified,
    read_rows_from,
    rewrite_rows,
    starts_table,
    truncated_if_replaced,
)
from trading_assets.io.postgres import copy_frame, filled_scratch_table, read_frame

# EMA family (its table) -> the bar families whose rows are its daily grid.
EMA_SOURCES = {
    "ema_multi_tf": ("1d", "multi_tf"),
    "ema_multi_tf_cal_iso": ("cal_iso",),
    "ema_multi_tf_cal_us": ("cal_us",),
    "ema_multi_tf_cal_anchor_iso": ("cal_anchor_iso",),
    "ema_multi_tf_cal_anchor_us": ("cal_anchor_us",),
    "ema_multi_tf_v2": ("1d",),
}
EMA_FAMILIES = list(EMA_SOURCES)
# Which EMA families read each bar family (they are marked dirty when it is rebuilt).
EMAS_OF_BARS = {bars: [f for f, sources in EMA_SOURCES.items() if bars in sources] for bars in BAR_TABLES}
PACKED_COLUMNS = ["asset_id", "tf", "trade_date", "tf_days", "roll", "n_closes", "close_sum"]
# The long rows a packed row stands for (one per period from its seed on), as the row counts count them.
_LONG_ROWS = sql.SQL("cardinality(array_remove(ema, null))")


def packed_table(family: str) -> sql.Composable:
    return sql.SQL("market.{}").format(sql.Identifier(f"{family}_packed"))


def active_periods(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute("select period from market.dim_ema_period where is_active order by period").fetchall()
    return [period for (period,) in rows]


def stored_periods(conn: psycopg.Connection, family: str) -> list[int] | None:
    row = conn.execute("select periods from market.ema_layout where family = %s", (family,)).fetchone()
    return None if row is None else list(row[0])


def set_periods(conn: psycopg.Connection, family: str, periods: list[int]) -> None:
    conn.execute(
        "insert into market.ema_layout (family, periods) values (%s, %s) "
        "on conflict (family) do update set periods = excluded.periods",
        (family, periods),
    )


def first_bar_dates(conn: psycopg.Connection, asset_ids: list[int] | None) -> dict[int, date]:
    """Each asset's first daily bar (where a family rebuilt from scratch starts)."""
    rows = conn.execute(
        "select asset_id, min(trade_date) from market.price_bars_1d "
        "where %s::int[] is null or asset_id = any(%s::int[]) group by asset_id",
        (asset_ids, asset_ids),
    ).fetchall()
    return dict(rows)


def queued_assets(conn: psycopg.Connection) -> list[int]:
    """Assets with EMA work waiting (a dirty mark of any EMA family)."""
    rows = conn.execute(
        "select distinct asset_id from market.bars_dirty where family = any(%s) order by 1", (EMA_FAMILIES,)
    ).fetchall()
    return [asset_id for (asset_id,) in rows]


def newest_bar_closes(conn: psycopg.Connection, asset_ids: list[int]) -> pl.DataFrame:
    """Per asset: its calendar, timezone and when its newest daily bar closed (null: no bar)."""
    return read_frame(
        conn,
        "select a.asset_id, a.calendar, a.timezone, "
        "(select max(b.time_close_bar) from market.price_bars_1d b where b.asset_id = a.asset_id) as newest_close "
        "from market.dim_assets a where a.asset_id = any(%s::int[]) order by a.asset_id",
        (asset_ids,),
        schema={
            "asset_id": pl.Int64,
            "calendar": pl.String,
            "timezone": pl.String,
            "newest_close": pl.Datetime("us", "UTC"),
        },
    )


def read_grid(conn: psycopg.Connection, family: str, starts: pl.DataFrame, end: date) -> pl.DataFrame:
    """The daily grid (GRID_SCHEMA) of `family` per (asset_id, tf, from_date) of `starts`, up to `end`, in
    (asset, tf, date) order: each series in a run, as the kernels take them.

    A bar family has a snapshot row for every daily bar from its first row to its last, closing at the
    day's close, so the grid is read as the daily closes, each (asset, tf)'s first and last bar date and its
    canonical dates: a few rows per bar instead of one per timeframe and day (daily bars are tf 1D, canonical
    unless partial, as read with their closes).
    """
    from_dates = starts.group_by("asset_id").agg(pl.col("from_date").min())
    daily = read_rows_from(
        conn,
        "price_bars_1d",
        dict(from_dates.iter_rows()),
        {"asset_id": pl.Int64, "trade_date": pl.Date, "close": pl.Float64, "is_partial_end": pl.Boolean},
        end,
    )
    span_schema = {"asset_id": pl.Int64, "tf": pl.String, "first": pl.Date, "last": pl.Date}
    spans, canonical = [], [pl.DataFrame(schema={"asset_id": pl.Int64, "tf": pl.String, "trade_date": pl.Date})]
    for bars in EMA_SOURCES[family]:
        table = sql.SQL("market.{}").format(sql.Identifier(BAR_TABLES[bars]))
        # Each (asset, tf) is looked up only in the table that holds its tf: daily bars hold 1D alone, and a
        # tf a table lacks would walk all of the asset's rows there (a cost that grows with history).
        held = starts.filter((pl.col("tf") == DAILY_TF) == (bars == "1d"))
        filled_scratch_table(conn, "ema_grid_from", TF_STARTS, held, ["asset_id", "tf", "from_date"])
        # A span starts at its from_date if it has rows before (else at its first row), and ends at its last row
        # before `end`.
        spans.append(
            read_frame(
                conn,
                sql.SQL(
                    "select r.asset_id, r.tf, case when p.asset_id is null then (select min(t.trade_date) "
                    "from {t} t where t.asset_id = r.asset_id and t.tf = r.tf and t.trade_date >= r.from_date) "
                    "else r.from_date end, l.trade_date from ema_grid_from r "
                    "join ({last}) l on l.asset_id = r.asset_id and l.tf = r.tf "
                    "left join ({before}) p on p.asset_id = r.asset_id and p.tf = r.tf"
                ).format(
                    t=table,
                    last=last_rows_before(table, "ema_grid_from", sql.Literal(end), ["trade_date"]),
                    before=last_rows_before(table, "ema_grid_from", sql.SQL("r.from_date"), ["trade_date"]),
                ),
                schema=span_schema,
            ).drop_nulls()
        )
        # Daily bars are canonical unless partial: read with their closes above.
        if bars != "1d":
            # One range of the key (asset_id, trade_date, tf) per asset, from its earliest from_date.
            canonical.append(
                read_frame(
                    conn,
                    sql.SQL(
                        "select t.asset_id, t.tf, t.trade_date from (select asset_id, min(from_date) as from_date "
                        "from ema_grid_from group by asset_id) a cross join lateral (select asset_id, tf, trade_date "
                        "from {} t where t.asset_id = a.asset_id and t.trade_date >= a.from_date "
                        "and t.trade_date < {} and not t.is_partial_end offset 0) t join ema_grid_from r "
                        "on r.asset_id = t.asset_id and r.tf = t.tf and t.trade_date >= r.from_date"
                    ).format(table, sql.Literal(end)),
                    schema={"asset_id": pl.Int64, "tf": pl.String, "trade_date": pl.Date},
                )
            )
    # Each (asset, tf) span numbered in key order, and a canonical date found by one integer (span high, day
    # low): a join on the string tf of every grid row cost 0.25 s of 2.2 M rows.
    order = labels_in_key_order(conn, starts["tf"].unique().to_list())
    rank = pl.col("tf").replace_strict(order, list(range(len(order))), return_dtype=pl.Int32)
    spans = pl.concat(spans).sort(pl.col("asset_id"), rank).with_row_index("span")
    span_day = pl.col("span").cast(pl.Int64) * 2**32 + pl.col("trade_date").cast(pl.Int32)
    canonical_days = pl.concat(canonical).join(spans, on=["asset_id", "tf"]).select(span_day).to_series()
    # Joined in order: each span's days, spans in key order (no sort of the grid's rows).
    return (
        spans.join(daily, on="asset_id", maintain_order="left_right")
        .filter(pl.col("trade_date").is_between(pl.col("first"), pl.col("last")))
        .with_columns(
            canonical=pl.when(pl.col("tf") == DAILY_TF)
            .then(~pl.col("is_partial_end"))
            .otherwise(span_day.is_in(canonical_days.implode()))
        )
        .select(list(GRID_SCHEMA))
    )


def read_carry(conn: psycopg.Connection, family: str, starts: pl.DataFrame, periods: list[int]) -> pl.DataFrame:
    """Per (asset_id, tf, from_date) of `starts`: the state after the last stored row before from_date
    (carry_schema: closes seen, their sum, each period's ema and its last canonical ema_bar)."""
    filled_scratch_table(conn, "ema_carry_from", TF_STARTS, starts, ["asset_id", "tf", "from_date"])
    positions = range(1, len(periods) + 1)
    packed = packed_table(family)
    last = last_rows_before(
        packed,
        "ema_carry_from",
        sql.SQL("r.from_date"),
        ["trade_date", "roll", "n_closes", "close_sum", "ema", "ema_bar"],
    )
    # The last canonical row is the last row itself unless that one rolls: only then is it looked up.
    query = sql.SQL(
        "select l.asset_id, l.tf, l.n_closes, l.close_sum, {emas}, {bars} from ({last}) l "
        "left join lateral (select t.ema_bar from {packed} t where l.roll and t.asset_id = l.asset_id "
        "and t.tf = l.tf and t.trade_date < l.trade_date and not t.roll order by t.trade_date desc limit 1) c on true"
    ).format(
        emas=sql.SQL(", ").join(sql.SQL("l.ema[{}]").format(sql.Literal(i)) for i in positions),
        bars=sql.SQL(", ").join(
            sql.SQL("(case when l.roll then c.ema_bar else l.ema_bar end)[{}]").format(sql.Literal(i))
            for i in positions
        ),
        last=last,
        packed=packed,
    )
    return read_frame(conn, query, schema=carry_schema(periods))


def replace_emas(
    conn: psycopg.Connection,
    family: str,
    wides: Iterable[pl.DataFrame],
    starts: pl.DataFrame,
    periods: list[int],
    end: date,
    expected_rows: int,
    truncated: bool | None = None,
) -> int:
    """Delete each (asset, tf)'s rows from its from_date to `end` and COPY the rows of `wides` packed (about
    `expected_rows` wide rows, in (asset, tf, date) order with the timeframes in key order), each frame stored
    in_key_order while the next is made; returns packed rows. `truncated`: as for rewrite_rows."""
    emas, bars = ema_columns(periods)

    def packed_rows() -> Iterator[pl.DataFrame]:
        for wide in wides:
            # One float8[] per row, a value per period (NULL before its seed). (concat_arr: a fixed-size array
            # is built in one pass, 20 times faster than concat_list, and is written as it is.)
            yield in_key_order(
                [
                    wide.select(
                        *PACKED_COLUMNS,
                        ema=pl.concat_arr(emas),
                        ema_bar=pl.concat_arr(bars),
                        long_rows=values_per_row(periods),
                    )
                ]
            )

    return rewrite_rows(
        conn,
        f"market.{family}_packed",
        qualified(family),
        starts,
        packed_rows(),
        [*PACKED_COLUMNS, "ema", "ema_bar"],
        end,
        expected_rows,
        # A packed row stands for one long row per period with a value.
        weight_column="long_rows",
        weight=_LONG_ROWS,
        truncated=truncated,
    )


def emas_truncated_if_replaced(
    conn: psycopg.Connection, family: str, starts: pl.DataFrame, end: date
) -> AbstractContextManager[bool]:
    """truncated_if_replaced for the packed table of the EMA `family`."""
    return truncated_if_replaced(conn, f"market.{family}_packed", qualified(family), starts, end)


def replace_rejects(
    conn: psycopg.Connection, family: str, starts: dict[int, date], rejects: pl.DataFrame, end: date
) -> int:
    """Rebuilt dates replace their rejects; `rejects` in the columns of market.ema_rejects."""
    starts_table(conn, starts)
    conn.execute(
        "delete from market.ema_rejects e using rebuild_from r where e.family = %s "
        "and e.asset_id = r.asset_id and e.trade_date >= r.from_date and e.trade_date < %s",
        (family, end),
    )
    if rejects.is_empty():
        return 0
    return copy_frame(conn, sql.SQL("market.ema_rejects"), rejects.with_columns(family=pl.lit(family)))


def daily_closes(conn: psycopg.Connection, windows: pl.DataFrame) -> pl.DataFrame:
    """Daily closes of each asset of `windows` (asset_id, window_start, trade_date) within its windows."""
    spans = windows.group_by("asset_id").agg(first=pl.col("window_start").min(), last=pl.col("trade_date").max())
    filled_scratch_table(conn, "ema_close_windows", "(asset_id integer, first date, last date)", spans)
    return read_frame(
        conn,
        "select b.asset_id, b.trade_date, b.close from ema_close_windows w join market.price_bars_1d b "
        "on b.asset_id = w.asset_id and b.trade_date between w.first and w.last",
        schema={"asset_id": pl.Int64, "trade_date": pl.Date, "close": pl.Float64},
    )
