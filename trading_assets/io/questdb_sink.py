"""An optional sink of research datasets to QuestDB over InfluxDB line protocol (TCP), with QuestDB's client."""

from __future__ import annotations

import polars as pl
from questdb.ingress import Buffer, Protocol, Sender, TimestampNanos


def ilp_buffer(table: str, tags: dict[str, str], rows: pl.DataFrame) -> Buffer:
    """One line per row: `table,<tags> <fields> <ns>` (NULL fields left out, as line protocol requires)."""
    buffer = Buffer()
    for row in rows.iter_rows(named=True):
        at = TimestampNanos(row.pop("ns"))
        buffer.row(table, symbols=tags, columns={k: v for k, v in row.items() if v is not None}, at=at)
    return buffer


def send(address: str, buffer: Buffer) -> None:
    """Send `buffer` to the line-protocol listener at `host:port`."""
    host, _, port = address.rpartition(":")
    with Sender(Protocol.Tcp, host, int(port)) as sender:
        sender.flush(buffer)
