"""Writes of the trading schema: a run's window of rows replaced in its transaction, partitions made first."""

from datetime import date

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.validation import REJECT_SCHEMA
from trading_assets.io import retention
from trading_assets.io.postgres import copy_frame, filled_scratch_table, read_frame, scratch_table


def table(name: str) -> sql.Composed:
    return sql.SQL("trading.{}").format(sql.Identifier(name))


def ensure_partitions(conn: psycopg.Connection, name: str, first: date, last: date) -> int:
    """Create the partitions of trading.`name` for first..last that do not exist; returns how many it made."""
    return conn.execute("select trading.ensure_partitions(%s, %s, %s)", (name, first, last)).fetchone()[0]


def ensure_partitions_of(conn: psycopg.Connection, name: str, days: pl.Series) -> int:
    """Create the missing partitions of trading.`name` holding `days` (only those: a span of history does not
    become a partition per day without rows)."""
    (unit,) = conn.execute("select unit from trading.partitioning where table_name = %s", (name,)).fetchone()
    starts = days.dt.truncate("1d" if unit == "day" else "1mo").unique().sort()
    return sum(ensure_partitions(conn, name, start, start) for start in starts)


def replace_window(conn: psycopg.Connection, name: str, rows: pl.DataFrame, first: date | None, end: date) -> int:
    """Make trading.`name` hold exactly `rows` (all inside the window) for trade dates in [first, end) (first
    None: every date before end); returns the rows removed."""
    window = sql.SQL("trade_date < {}").format(sql.Literal(end))
    if first is not None:
        window = sql.SQL("trade_date >= {} and ").format(sql.Literal(first)) + window
    removed = conn.execute(sql.SQL("delete from {} where ").format(table(name)) + window).rowcount
    rows = retention.without_dropped(conn, f"trading.{name}", rows)
    if not rows.is_empty():
        ensure_partitions_of(conn, name, rows["trade_date"])
        copy_frame(conn, table(name), rows)
    return removed


def replace_rejects(conn: psycopg.Connection, name: str, files: list[str], rejects: pl.DataFrame) -> None:
    """The rejects of trading.`name` from `files` become `rejects` (REJECT_SCHEMA): a file read again replaces
    its own."""
    conn.execute("delete from trading.rejects where table_name = %s and source_file = any(%s)", (name, files))
    add_rejects(conn, name, rejects)


def add_rejects(conn: psycopg.Connection, name: str, rejects: pl.DataFrame) -> None:
    """Keep `rejects` (REJECT_SCHEMA) of trading.`name` beside those already kept (a line refused again stays
    once)."""
    if rejects.is_empty():
        return
    filled_scratch_table(
        conn, "incoming_rejects", "(source_file text, source_line integer, reason text, raw text)", rejects
    )
    conn.execute(
        "insert into trading.rejects (table_name, source_file, source_line, reason, raw) "
        "select %s, source_file, source_line, reason, raw from incoming_rejects on conflict do nothing",
        (name,),
    )


TRADE_VALUES = ["symbol", "side", "qty", "price", "fees", "strategy", "submitted_at", "filled_at"]


def record_trades(conn: psycopg.Connection, trades: pl.DataFrame) -> tuple[int, pl.DataFrame]:
    """Insert the trades whose order_id is new; (rows inserted, rejects of order_ids stored with other values:
    a recorded trade is permanent, a correction is a new trade)."""
    scratch_table(
        conn,
        "incoming_trades",
        "(order_id text, symbol text, side text, qty float8, price float8, fees float8, strategy text, "
        "submitted_at timestamptz, filled_at timestamptz, trade_date date, source_file text, source_line integer)",
    )
    copy_frame(conn, sql.SQL("incoming_trades"), trades)
    values = sql.SQL(", ").join(sql.Identifier(c) for c in TRADE_VALUES)
    conflicts = read_frame(
        conn,
        sql.SQL(
            "select i.source_file, i.source_line, 'order_id ' || i.order_id || ' is recorded with other values "
            "(from ' || t.source_file || ' line ' || t.source_line || '): a trade is permanent' as reason, "
            "i.order_id as raw from incoming_trades i join trading.trade_history t using (order_id) "
            "where ({i}) is distinct from ({t})"
        ).format(
            i=sql.SQL(", ").join(sql.SQL("i.") + sql.Identifier(c) for c in TRADE_VALUES),
            t=sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in TRADE_VALUES),
        ),
        schema=REJECT_SCHEMA,
    )
    inserted = conn.execute(
        sql.SQL(
            "insert into trading.trade_history (order_id, {v}, trade_date, source_file, source_line) "
            "select order_id, {v}, trade_date, source_file, source_line from incoming_trades "
            "on conflict (order_id) do nothing"
        ).format(v=values)
    ).rowcount
    return inserted, conflicts


def file_checkpoints(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """{source_file: (bytes read, lines read)} of the incremental minute files."""
    return {
        f: (b, n) for f, b, n in conn.execute("select source_file, bytes_read, lines_read from trading.intraday_files")
    }


def save_checkpoints(conn: psycopg.Connection, checkpoints: dict[str, tuple[int, int]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into trading.intraday_files (source_file, bytes_read, lines_read) values (%s, %s, %s) "
            "on conflict (source_file) do update set bytes_read = excluded.bytes_read, "
            "lines_read = excluded.lines_read, read_at = now()",
            [(f, b, n) for f, (b, n) in checkpoints.items()],
        )


def upsert_minutes(conn: psycopg.Connection, rows: pl.DataFrame) -> int:
    """Store 1min rows; a minute sent again replaces the stored one (a correction from its source)."""
    rows = retention.without_dropped(conn, "trading.multi_resolution_bars", rows)
    if rows.is_empty():
        return 0
    ensure_partitions_of(conn, "multi_resolution_bars", rows["trade_date"])
    scratch_table(conn, "incoming_minutes", "(like trading.multi_resolution_bars including defaults)")
    copy_frame(conn, sql.SQL("incoming_minutes"), rows)
    columns = rows.columns
    updates = sql.SQL(", ").join(
        sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
    )
    listed = sql.SQL(", ").join(map(sql.Identifier, columns))
    return conn.execute(
        sql.SQL(
            "insert into trading.multi_resolution_bars ({c}) select {c} from incoming_minutes "
            "on conflict (trade_date, exchange, symbol, resolution, bar_start) do update set {u}"
        ).format(c=listed, u=updates)
    ).rowcount


def filled_sessions(conn: psycopg.Connection, sessions: pl.DataFrame) -> None:
    """The scratch table rolled_sessions: the (exchange, symbol, trade_date) a roll-up rewrites."""
    filled_scratch_table(
        conn,
        "rolled_sessions",
        "(exchange text, symbol text, trade_date date)",
        sessions,
        ["exchange", "symbol", "trade_date"],
    )


def stored_sessions(conn: psycopg.Connection, start: date | None, end: date) -> pl.DataFrame:
    """(exchange, symbol, trade_date) with stored minutes in [start, end)."""
    return read_frame(
        conn,
        sql.SQL(
            "select distinct exchange, symbol, trade_date from trading.multi_resolution_bars "
            "where resolution = '1min' and trade_date < {}{}"
        ).format(
            sql.Literal(end), sql.SQL(" and trade_date >= {}").format(sql.Literal(start)) if start else sql.SQL("")
        ),
        schema={"exchange": pl.String, "symbol": pl.String, "trade_date": pl.Date},
    )


def replace_rolled(conn: psycopg.Connection, bars: pl.DataFrame) -> int:
    """The bars above 1min of the sessions in rolled_sessions become `bars`; returns rows removed."""
    removed = conn.execute(
        "delete from trading.multi_resolution_bars b using rolled_sessions s where b.resolution <> '1min' "
        "and (b.exchange, b.symbol, b.trade_date) = (s.exchange, s.symbol, s.trade_date)"
    ).rowcount
    bars = retention.without_dropped(conn, "trading.multi_resolution_bars", bars)
    if not bars.is_empty():
        ensure_partitions_of(conn, "multi_resolution_bars", bars["trade_date"])
        copy_frame(conn, table("multi_resolution_bars"), bars)
    return removed


def partitions_ahead(conn: psycopg.Connection, first: date, last: date) -> int:
    """Create the partitions of first..last of every day-partitioned trading table; returns how many."""
    names = [n for (n,) in conn.execute("select table_name from trading.partitioning where unit = 'day' order by 1")]
    return sum(ensure_partitions(conn, name, first, last) for name in names)
