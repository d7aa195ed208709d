"""Readers for the series-metadata files: the golden `dim_series.csv` and observation CSVs.

Readers check structure (header, field counts, dates, numbers) and keep each row's line number, so that
every later rule can name the file and line it rejects.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from datetime import date
from pathlib import Path

import polars as pl

from trading_assets.errors import InputError, Problem, raise_if_any

SERIES_CONFIG_COLUMNS = ("model_col", "series_code", "unit", "freq", "description", "tags")
_REQUIRED_CONFIG_COLUMNS = ("model_col", "series_code", "freq")
_FRED_DATE_HEADERS = {"date", "observation_date"}
_MISSING_VALUES = {"", "."}
# What a date and a number look like in these files (date.fromisoformat and float take more: 20200102,
# 2020-W01-1, 1_000).
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", re.ASCII)
_NOT_FINITE = re.compile(r"^[+-]?(nan|inf|infinity)$", re.IGNORECASE)

OBSERVATION_SCHEMA = {
    "series_code": pl.String,
    "obs_date": pl.Date,
    "value": pl.Float64,
    "source_file": pl.String,
    "line": pl.Int64,
}


def _decode(path: Path, encoding: str) -> tuple[str | None, Problem | None]:
    """The text of `path` (a UTF-8 byte order mark dropped), or the problem: the file cannot be read, or the
    first line holding a byte the encoding cannot decode."""
    name = str(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        return None, Problem(name, 0, f"unknown encoding {encoding!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, Problem(name, 0, f"cannot open file: {exc.strerror}")
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode(codec), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end]
        shown = f"byte{'s' if len(bad) > 1 else ''} {' '.join(f'0x{b:02x}' for b in bad)}"
        label, hint = ("UTF-8", " (save the file as UTF-8)") if codec == "utf-8" else (encoding, "")
        return None, Problem(name, line, f"not {label} text: {shown} on this line cannot be decoded{hint}")


def _read_rows(path: Path, encoding: str = "utf-8") -> tuple[list[str], list[tuple[int, list[str]]], list[Problem]]:
    """Header and (line number, fields) rows; blank lines are skipped. Line numbers count the file's lines."""
    name = str(path)
    text, problem = _decode(path, encoding)
    if problem:
        return [], [], [problem]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        rows = [(reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)]
    except csv.Error as exc:
        return [], [], [Problem(name, reader.line_num, f"not a readable CSV file: {exc}")]
    if not header:
        return [], [], [Problem(name, 1, "file is empty (no header line)")]
    problems = [
        Problem(name, line, f"expected {len(header)} fields, found {len(fields)}")
        for line, fields in rows
        if len(fields) != len(header)
    ]
    return header, rows, problems


def read_series_config(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """Rows of a dim_series CSV (tags split on ';'), with their line numbers; structural errors raise.

    An optional column (unit, description, tags) the header lacks is null: not given, which an import reads
    as "leave as it is", unlike an empty field."""
    name = str(path)
    header, rows, problems = _read_rows(path, encoding)
    lowered = [h.lower() for h in header]
    missing = [c for c in _REQUIRED_CONFIG_COLUMNS if c not in lowered]
    if header and missing:
        problems.append(Problem(name, 1, f"header lacks column(s) {', '.join(missing)}"))
    raise_if_any(problems)
    index = {column: lowered.index(column) for column in SERIES_CONFIG_COLUMNS if column in lowered}

    def field(fields: list[str], column: str) -> str | None:
        return fields[index[column]].strip() if column in index else None

    def tags(fields: list[str]) -> list[str] | None:
        text = field(fields, "tags")
        return None if text is None else [t.strip() for t in text.split(";") if t.strip()]

    return pl.DataFrame(
        {
            "model_col": [field(f, "model_col") for _, f in rows],
            "series_code": [field(f, "series_code") for _, f in rows],
            "unit": [field(f, "unit") for _, f in rows],
            "freq": [field(f, "freq").upper() for _, f in rows],
            "description": [field(f, "description") for _, f in rows],
            "tags": [tags(f) for _, f in rows],
            "line": [line for line, _ in rows],
        },
        schema={
            **dict.fromkeys(SERIES_CONFIG_COLUMNS[:5], pl.String),
            "tags": pl.List(pl.String),
            "line": pl.Int64,
        },
    ).with_columns(source_file=pl.lit(name))


def _parse_date(text: str) -> date | None:
    stripped = text.strip()
    if not _DATE.match(stripped):
        return None
    try:
        return date.fromisoformat(stripped)
    except ValueError:
        return None


def _parse_value(text: str) -> tuple[float | None, str | None]:
    """(value, reason): value None with no reason means missing (FRED writes '.')."""
    stripped = text.strip()
    if stripped in _MISSING_VALUES:
        return None, None
    if _NOT_FINITE.match(stripped):
        return None, f"value {stripped!r} is not a finite number"
    if not _NUMBER.match(stripped):
        return None, f"value {stripped!r} is not a number"
    value = float(stripped)
    if not math.isfinite(value):  # 1e999
        return None, f"value {stripped!r} is not a finite number"
    return value, None


def read_observations(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """Observations of a FRED CSV (`DATE,<SERIES>`) or a plain `series_code,obs_date,value` CSV.

    Missing values ('.' or empty) are kept as null so the caller can count them; any unparsable row raises,
    and so does a file with a header and no rows (a truncated download, not "nothing new").
    """
    name = str(path)
    header, rows, problems = _read_rows(path, encoding)
    lowered = [h.lower() for h in header]
    if lowered[:3] == ["series_code", "obs_date", "value"] and len(lowered) == 3:
        codes = [fields[0].strip() for _, fields in rows]
        date_index, value_index = 1, 2
    elif len(lowered) == 2 and lowered[0] in _FRED_DATE_HEADERS and header[1]:
        codes = [header[1]] * len(rows)
        date_index, value_index = 0, 1
    else:
        if header:
            problems.append(
                Problem(
                    name,
                    1,
                    f"unrecognised header {header!r}: expected 'DATE,<SERIES_CODE>' (FRED) "
                    "or 'series_code,obs_date,value'",
                )
            )
        raise_if_any(problems)
        codes, date_index, value_index = [], 0, 1
    if header and not rows:
        problems.append(Problem(name, 1, "no observations: the file has a header line and no rows"))

    dates, values = [], []
    for (line, fields), code in zip(rows, codes, strict=True):
        if len(fields) != len(header):
            dates.append(None)
            values.append(None)
            continue
        obs_date = _parse_date(fields[date_index])
        if obs_date is None:
            problems.append(Problem(name, line, f"date {fields[date_index]!r} is not YYYY-MM-DD"))
        value, reason = _parse_value(fields[value_index])
        if reason:
            problems.append(Problem(name, line, reason))
        if not code:
            problems.append(Problem(name, line, "series_code is empty"))
        dates.append(obs_date)
        values.append(value)
    raise_if_any(problems)
    return pl.DataFrame(
        {
            "series_code": codes,
            "obs_date": dates,
            "value": values,
            "source_file": [name] * len(rows),
            "line": [line for line, _ in rows],
        },
        schema=OBSERVATION_SCHEMA,
    )


def read_observation_batch(paths: list[Path], encoding: str = "utf-8") -> pl.DataFrame:
    """All observations of several files; the problems of every file are reported together."""
    frames, problems = [], []
    for path in paths:
        try:
            frames.append(read_observations(path, encoding))
        except InputError as exc:
            problems += exc.problems
    raise_if_any(problems)
    return pl.concat(frames) if frames else pl.DataFrame(schema=OBSERVATION_SCHEMA)
