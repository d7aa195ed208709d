"""Reads and writes of the `market` tables. Each function runs inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.bars import CARRY_SCHEMA
from trading_assets.io.postgres import copy_frame, filled_scratch_table, read_frame, scratch_table
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
# Scratch table of per (asset, timeframe) start dates.
# The one timeframe of price_bars_1d (its check constraint).
DAILY_TF = "1D"
TF_STARTS = "(asset_id integer, tf text, from_date date)"


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
    if catalog_symbol is not None:
        linked = conn.execute(
            "select s.timezone, e.calendar from catalog.symbols s left join catalog.exchanges e "
            "on e.exchange = s.exchange and e.valid_until is null where s.symbol = %s and s.valid_until is null",
            (catalog_symbol,),
        ).fetchone()
        if linked is None:
            raise ValueError(f"{catalog_symbol!r} is not in the symbol catalog (load it with `load symbols`)")
        timezone, calendar = timezone or linked[0], calendar or linked[1]
    conn.execute("insert into market.dim_assets (symbol) values (%s) on conflict (symbol) do nothing", (symbol,))
    conn.execute(
        "update market.dim_assets set timezone = coalesce(%s, timezone), calendar = coalesce(%s, calendar), "
        "asset_class = coalesce(%s, asset_class), catalog_symbol = coalesce(%s, catalog_symbol) where symbol = %s",
        (timezone, calendar, asset_class, catalog_symbol, symbol),
    )
    return conn.execute(
        "select asset_id, timezone, calendar from market.dim_assets where symbol = %s", (symbol,)
    ).fetchone()


def assets(conn: psycopg.Connection) -> pl.DataFrame:
    return read_frame(
        conn,
        "select asset_id, symbol, timezone, calendar from market.dim_assets order by asset_id",
        schema={"asset_id": pl.Int64, "symbol": pl.String, "timezone": pl.String, "calendar": pl.String},
    )


def symbols_of(conn: psycopg.Connection, asset_ids: list[int]) -> list[str]:
    rows = conn.execute(
        "select symbol from market.dim_assets where asset_id = any(%s) order by symbol", (asset_ids,)
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
    inserted = sum(1 for _, is_new in changed if is_new)
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
    with conn.cursor() as cur:
        cur.executemany(
            "insert into market.bars_dirty (family, asset_id, dirty_from) values (%s, %s, %s) "
            "on conflict (family, asset_id) do update "
            "set dirty_from = least(bars_dirty.dirty_from, excluded.dirty_from)",
            [(family, asset_id, day) for asset_id, day in dirty_from.items()],
        )


def take_dirty(conn: psycopg.Connection, family: str, asset_ids: list[int] | None = None) -> dict[int, date]:
    """Dirty marks of `family` (of `asset_ids` only, if given), removed: the caller's transaction rebuilds
    them or rolls back."""
    rows = conn.execute(
        "delete from market.bars_dirty where family = %s and (%s::int[] is null or asset_id = any(%s::int[])) "
        "returning asset_id, dirty_from",
        (family, asset_ids, asset_ids),
    ).fetchall()
    return dict(rows)


def assets_with_prices_since(conn: psycopg.Connection, source: str, since: date | None) -> dict[int, date]:
    """First date on or after `since` of every asset with rows in the source table."""
    condition = sql.SQL("") if since is None else sql.SQL("where trade_date >= %s")
    query = sql.SQL("select asset_id, min(trade_date) from market.{} {} group by asset_id").format(
        sql.Identifier(source), condition
    )
    return dict(conn.execute(query, () if since is None else (since,)).fetchall())


def _starts_table(conn: psycopg.Connection, starts: dict[int, date]) -> None:
    scratch_table(conn, "rebuild_from", "(asset_id integer, from_date date)")
    with conn.cursor() as cur, cur.copy("copy rebuild_from from stdin") as copy:
        for asset_id, day in starts.items():
            copy.write_row((asset_id, day))
    # Statistics let the planner use the (asset_id, ...) indexes instead of scanning the whole table.
    conn.execute("analyze rebuild_from")


def read_rows_from(
    conn: psycopg.Connection, table: str, starts: dict[int, date], schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """Rows of market.`table` of each asset on or after its start date, ordered by asset and date."""
    columns = list(schema)
    _starts_table(conn, starts)
    # One index range scan per asset (`offset 0` keeps the planner from flattening the lateral subquery into
    # a scan of the whole table: it cannot tell that a one-day refresh wants one row per asset).
    query = sql.SQL(
        "select {cols} from rebuild_from r cross join lateral (select * from market.{table} t "
        "where t.asset_id = r.asset_id and t.trade_date >= r.from_date offset 0) t order by t.asset_id, t.trade_date"
    ).format(cols=sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in columns), table=sql.Identifier(table))
    return read_frame(conn, query, schema=schema)


def days_to_rebuild(conn: psycopg.Connection, source: str, starts: dict[int, date]) -> dict[int, int]:
    """Per asset, the days from its start date to its last row in market.`source` (at least its rows)."""
    _starts_table(conn, starts)
    query = sql.SQL(
        "select r.asset_id, coalesce((select max(t.trade_date) from market.{} t where t.asset_id = r.asset_id) "
        "- r.from_date + 1, 0) from rebuild_from r"
    ).format(sql.Identifier(source))
    return dict(conn.execute(query).fetchall())


def daily_context(conn: psycopg.Connection, starts: dict[int, date]) -> pl.DataFrame:
    """Per asset: rows of price_bars_1d before its start (the row index to continue from) and its first date."""
    _starts_table(conn, starts)
    return read_frame(
        conn,
        """
        select r.asset_id, r.from_date,
               coalesce((select max(b.bar_seq) from market.price_bars_1d b
                         where b.asset_id = r.asset_id and b.trade_date < r.from_date), 0) as rows_before,
               (select min(b.trade_date) from market.price_bars_1d b where b.asset_id = r.asset_id) as first_trade_date
        from rebuild_from r
        """,
        schema={"asset_id": pl.Int64, "from_date": pl.Date, "rows_before": pl.Int64, "first_trade_date": pl.Date},
    )


def replace_bars(
    conn: psycopg.Connection, family: str, frame: pl.DataFrame, starts: pl.DataFrame, columns: list[str]
) -> int:
    """Delete each (asset, tf)'s rows from its start date (`starts`: asset_id, tf, from_date) and COPY `frame`."""
    table = sql.SQL("market.{}").format(sql.Identifier(BAR_TABLES[family]))
    filled_scratch_table(conn, "replace_from", TF_STARTS, starts, ["asset_id", "tf", "from_date"])
    delete_from_dates(conn, table, "replace_from", frame.height)
    return copy_frame(conn, table, frame, columns)


# Up to this many rows, a rewrite deletes by one index range scan per (asset, tf).
_FEW_ROWS = 500_000


def delete_from_dates(conn: psycopg.Connection, table: sql.Composable, starts: str, expected_rows: int) -> None:
    """Delete each (asset_id, tf)'s rows of `table` on or after its from_date in the scratch table `starts`.

    The planner cannot know that a one-day refresh deletes one row per key (it guesses a third of each
    key's history) and joins against a scan of the whole table, which grows with history; so a rewrite
    expected to be small names its rows by index lookups instead.
    """
    if expected_rows <= _FEW_ROWS:
        query = (
            "delete from {t} where ctid = any(array(select x.ctid from {s} r cross join lateral "
            "(select ctid from {t} x where x.asset_id = r.asset_id and x.tf = r.tf "
            "and x.trade_date >= r.from_date offset 0) x))"
        )
    else:
        query = (
            "delete from {t} t using {s} r "
            "where t.asset_id = r.asset_id and t.tf = r.tf and t.trade_date >= r.from_date"
        )
    conn.execute(sql.SQL(query).format(t=table, s=sql.Identifier(starts)))


def replace_bar_rejects(conn: psycopg.Connection, starts: dict[int, date], rejects: pl.DataFrame) -> int:
    """Repairs of daily bars are recorded as rejects with their reason; rebuilt dates replace theirs."""
    _starts_table(conn, starts)
    conn.execute(
        "delete from market.price_rejects p using rebuild_from r "
        "where p.stage = 'bars_1d' and p.asset_id = r.asset_id and p.trade_date >= r.from_date"
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
    query = sql.SQL(
        "select r.asset_id, r.tf, p.* from carry_from r cross join lateral "
        "(select bar_seq, open, high, low, volume, pos_in_bar, high_date, low_date from market.{} t "
        "where t.asset_id = r.asset_id and t.tf = r.tf and t.trade_date < r.from_date "
        "order by t.trade_date desc limit 1) p"
    ).format(sql.Identifier(BAR_TABLES[family]))
    schema = {k: v for k, v in CARRY_SCHEMA.items() if k != "bar_start"}
    return read_frame(conn, query, schema=schema).with_columns(bar_start=pl.lit(None, pl.Date))


def dates_of_bar_seq(conn: psycopg.Connection, wanted: pl.DataFrame) -> pl.DataFrame:
    """trade_date of daily bars by (asset_id, bar_seq) as `from_date`."""
    filled_scratch_table(conn, "wanted_seq", "(asset_id integer, bar_seq integer)", wanted, ["asset_id", "bar_seq"])
    return read_frame(
        conn,
        "select w.asset_id, w.bar_seq, b.trade_date as from_date "
        "from wanted_seq w join market.price_bars_1d b using (asset_id, bar_seq)",
        schema={"asset_id": pl.Int64, "bar_seq": pl.Int64, "from_date": pl.Date},
    )


def rows_without_prices(conn: psycopg.Connection, written: pl.DataFrame) -> int:
    """Rows of `written` (bar rows just stored) on a date with no loaded price: bars newer than prices."""
    if written.is_empty():
        return 0
    filled_scratch_table(
        conn,
        "written_days",
        "(asset_id integer, trade_date date, rows integer)",
        written.group_by("asset_id", "trade_date").agg(rows=pl.len()),
    )
    return conn.execute(
        "select coalesce(sum(rows), 0) from written_days w where not exists "
        "(select 1 from market.price_histories p where p.asset_id = w.asset_id and p.trade_date = w.trade_date)"
    ).fetchone()[0]
