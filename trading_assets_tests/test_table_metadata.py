"""What a materialization shows of its rows."""

from datetime import date

import polars as pl

from trading_assets.defs.table_metadata import markdown_table, preview


def test_markdown_table_shows_dates_as_written_nulls_empty_and_escapes_pipes() -> None:
    frame = pl.DataFrame(
        {"symbol": ["A|B", None], "trade_date": [date(2024, 1, 2), date(2024, 1, 3)], "close": [1.5, None]}
    )
    assert markdown_table(frame) == (
        "| symbol | trade_date | close |\n|:---|:---|---:|\n| A\\|B | 2024-01-02 | 1.5 |\n|  | 2024-01-03 |  |"
    )


def test_preview_shows_the_first_and_last_three_rows() -> None:
    shown = preview(pl.DataFrame({"n": list(range(10))})).value
    assert [line.strip("| ") for line in shown.splitlines()[2:]] == ["0", "1", "2", "7", "8", "9"]
    assert preview(pl.DataFrame({"n": []}), "rejects").value == "no rejects"
