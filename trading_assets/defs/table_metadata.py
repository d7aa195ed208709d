"""What a materialization tells a user about its table: name, columns, size, and a look at the rows."""

from datetime import date

import dagster as dg
import polars as pl
import psycopg

_PREVIEW_ROWS = 3


def column_schema(conn: psycopg.Connection, qualified: str) -> dg.TableSchema:
    """The columns of a table or view as the database declares them."""
    schema, table = qualified.split(".")
    rows = conn.execute(
        "select column_name, data_type, is_nullable = 'NO' from information_schema.columns "
        "where table_schema = %s and table_name = %s order by ordinal_position",
        (schema, table),
    ).fetchall()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, data_type, constraints=dg.TableColumnConstraints(nullable=not required))
            for name, data_type, required in rows
        ]
    )


def table_metadata(conn: psycopg.Connection, qualified: str, rows: int | None = None) -> dict[str, object]:
    """dagster/table_name, dagster/column_schema and dagster/row_count (`rows`, else counted)."""
    if rows is None:
        schema, table = qualified.split(".")
        rows = conn.execute(
            psycopg.sql.SQL("select count(*) from {}.{}").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
            )
        ).fetchone()[0]
    return {
        "dagster/table_name": qualified,
        "dagster/column_schema": column_schema(conn, qualified),
        "dagster/row_count": rows,
    }


def preview(frame: pl.DataFrame, title: str = "rows") -> dg.MetadataValue:
    """A Markdown table of the first and last rows of `frame`."""
    if frame.is_empty():
        return dg.MetadataValue.md(f"no {title}")
    shown = frame if frame.height <= 2 * _PREVIEW_ROWS else ends(frame)
    return dg.MetadataValue.md(markdown_table(shown))


def ends(first: pl.DataFrame, last: pl.DataFrame | None = None) -> pl.DataFrame:
    """The first rows of `first` and the last rows of `last` (else of `first`): what a preview shows of them."""
    return pl.concat([first.head(_PREVIEW_ROWS), (first if last is None else last).tail(_PREVIEW_ROWS)])


def markdown_table(frame: pl.DataFrame) -> str:
    """`frame` as a Markdown table, numbers right-aligned, NULL as an empty cell (written here: pandas'
    to_markdown cost a run's process 0.3 s to import pandas)."""

    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    lines = [
        "| " + " | ".join(frame.columns) + " |",
        "|" + "|".join("---:" if right else ":---" for right in numeric) + "|",
        *("| " + " | ".join(map(cell, row)) + " |" for row in frame.iter_rows()),
    ]
    return "\n".join(lines)


# Run metadata too large to repeat on every partition's materialization (a run of ten years writes 120).
TABLE_LEVEL = ("dagster/column_schema", "preview")


def report_partitions(
    context: dg.AssetExecutionContext, rows: pl.DataFrame, written: pl.DataFrame, metadata: dict[str, object]
) -> dict[str, object]:
    """Per partition of the run: its rows now and the rows written into it (frames of month, rows). The first
    partition also holds every earlier date. Of the run's `metadata`, the TABLE_LEVEL entries go to the run's
    last partition only (the newest materialization, whose schema and preview the UI shows for the asset:
    copying them into every partition cost a tenth of a ten-year bar run); returns the rest, for every
    partition."""
    first = date.fromisoformat(context.assets_def.partitions_def.get_first_partition_key())

    def by_partition(frame: pl.DataFrame) -> dict[date, int]:
        folded = frame.group_by(month=pl.max_horizontal("month", pl.lit(first))).agg(pl.col("rows").sum())
        return dict(folded.iter_rows())

    now, new = by_partition(rows), by_partition(written)
    keys = context.partition_keys
    for key in keys:
        month = date.fromisoformat(key)
        context.add_asset_metadata(
            {"dagster/partition_row_count": now.get(month, 0), "rows_written": new.get(month, 0)}, partition_key=key
        )
    context.add_asset_metadata({k: v for k, v in metadata.items() if k in TABLE_LEVEL}, partition_key=keys[-1])
    return {k: v for k, v in metadata.items() if k not in TABLE_LEVEL}
