"""Rules of the series-metadata slice: what a valid dim_series row and a valid observation are, what an
import of a dim_series file changes, and which backups have expired."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from trading_assets.compute.validation import duplicate_problems
from trading_assets.errors import Problem

MODEL_COL_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL truncates longer identifiers
# Columns core_energy.v_series_wide has of its own: a model_col of that name would make its rebuild fail
# (the database refuses them too: sql/013_series_guards.sql).
WIDE_VIEW_OWN_COLUMNS = ("date",)
# Observations dated before this are no dates of a real series but a placeholder (year 1 is the "no date" of
# many tools) or a typo (0202 for 2020). The latest date is the end of the current month (the partitions').
EARLIEST_OBS_DATE = date(1000, 1, 1)

# How old the newest observation of a series may be before it counts as stale: the publication lag of
# each frequency (e.g. a monthly series is stamped on the 1st and published weeks after the month ends).
MAX_OBSERVATION_AGE = {
    "D": timedelta(days=7),
    "W": timedelta(days=21),
    "M": timedelta(days=75),
    "Q": timedelta(days=200),
    "A": timedelta(days=550),
}


def model_col_problem(model_col: str) -> str | None:
    """Why `model_col` cannot be a column of the wide view (None: it can)."""
    if not MODEL_COL_PATTERN.match(model_col):
        return f"model_col {model_col!r} must be lower snake_case matching ^[a-z][a-z0-9_]*$"
    if len(model_col.encode()) > MAX_IDENTIFIER_BYTES:
        return f"model_col {model_col!r} is longer than 63 bytes"
    if model_col in WIDE_VIEW_OWN_COLUMNS:
        return f"model_col {model_col!r} is a column of core_energy.v_series_wide itself; choose another name"
    return None


def series_config_problems(frame: pl.DataFrame) -> list[Problem]:
    """Every reason a dim_series file cannot become the golden table, by file and line."""
    problems = []
    first_line: dict[str, tuple[str, int]] = {}  # lower-cased model_col -> (model_col, line) of its first row
    for row in frame.to_dicts():
        at = (row["source_file"], row["line"])
        model_col = row["model_col"]
        reason = model_col_problem(model_col)
        if reason:
            problems.append(Problem(*at, reason))
        seen = first_line.setdefault(model_col.lower(), (model_col, row["line"]))
        if seen[0] != model_col:  # the same name in other letter case (an exact repeat is reported below)
            problems.append(
                Problem(*at, f"model_col {model_col!r} repeats {seen[0]!r} (line {seen[1]}) case-insensitively")
            )
        if not row["series_code"]:
            problems.append(Problem(*at, "series_code is empty"))
        if row["freq"] not in MAX_OBSERVATION_AGE:
            problems.append(Problem(*at, f"freq {row['freq']!r} is not one of {', '.join(MAX_OBSERVATION_AGE)}"))
    problems += duplicate_problems(frame, ["model_col"], "model_col")
    problems += duplicate_problems(frame.filter(pl.col("series_code") != ""), ["series_code"], "series_code")
    return problems


def observation_problems(frame: pl.DataFrame, known_series: Collection[str], before: date) -> list[Problem]:
    """Observations naming a series dim_series does not know, dated on or after `before` (the end of the current
    month) or before EARLIEST_OBS_DATE, or repeated."""
    problems = [
        Problem(row["source_file"], row["line"], f"unknown series {row['series_code']!r} (not in dim_series)")
        for row in frame.filter(~pl.col("series_code").is_in(list(known_series))).to_dicts()
    ]
    problems += [
        Problem(
            row["source_file"],
            row["line"],
            f"obs_date {row['obs_date']} is after the current month (on or after {before})",
        )
        for row in frame.filter(pl.col("obs_date") >= before).to_dicts()
    ]
    problems += [
        Problem(
            row["source_file"],
            row["line"],
            f"obs_date {row['obs_date']} is before {EARLIEST_OBS_DATE}: not a plausible observation date",
        )
        for row in frame.filter(pl.col("obs_date") < EARLIEST_OBS_DATE).to_dicts()
    ]
    problems += duplicate_problems(frame, ["series_code", "obs_date"], "observation for this series and date")
    return problems


def stale_series(latest: pl.DataFrame, today: date) -> pl.DataFrame:
    """Series (columns series_code, freq, last_obs_date) whose newest observation is older than its frequency allows."""
    allowed = pl.col("freq").replace_strict(
        {freq: age.days for freq, age in MAX_OBSERVATION_AGE.items()}, return_dtype=pl.Int64
    )
    age_days = (pl.lit(today) - pl.col("last_obs_date")).dt.total_days()
    return (
        latest.with_columns(age_days=age_days, allowed_days=allowed)
        .filter(pl.col("last_obs_date").is_null() | (pl.col("age_days") > pl.col("allowed_days")))
        .sort("series_code")
    )


# The columns of a dim_series row as files and the table hold them (tags: a list of strings).
SERIES_COLUMNS = ("model_col", "series_code", "unit", "freq", "description", "tags")
_SERIES_SCHEMA = {**dict.fromkeys(SERIES_COLUMNS[:5], pl.String), "tags": pl.List(pl.String)}


@dataclass(frozen=True)
class SeriesImportPlan:
    """What importing a dim_series file changes: rows to insert, update and delete (each with the columns of
    `SERIES_COLUMNS`; updates also list their `changes`), and the table's rows the file lacks that stay."""

    inserts: pl.DataFrame
    updates: pl.DataFrame
    deletes: pl.DataFrame
    kept: pl.DataFrame
    remaining: int  # rows the table holds once the plan is applied

    @property
    def is_empty(self) -> bool:
        return self.inserts.is_empty() and self.updates.is_empty() and self.deletes.is_empty()

    @property
    def empties_table(self) -> bool:
        """Whether the plan deletes every row of the table (a file with no rows, imported with delete_missing)."""
        return self.remaining == 0 and not self.deletes.is_empty()

    def lines(self) -> list[str]:
        """The plan as a person reads it: one line per row inserted, updated, deleted or kept."""
        lines = [
            f"insert {r['model_col']}: series_code {r['series_code']!r}, unit {r['unit']!r}, freq {r['freq']!r}, "
            f"description {r['description']!r}, tags {r['tags']}"
            for r in self.inserts.to_dicts()
        ]
        lines += [f"update {r['model_col']}: {'; '.join(r['changes'])}" for r in self.updates.to_dicts()]
        lines += [f"delete {r['model_col']} (series_code {r['series_code']!r})" for r in self.deletes.to_dicts()]
        lines += [
            f"keep   {r['model_col']} (series_code {r['series_code']!r}): not in the file; --delete-missing deletes it"
            for r in self.kept.to_dicts()
        ]
        return lines

    def summary(self) -> str:
        return (
            f"{self.inserts.height} insert(s), {self.updates.height} update(s), {self.deletes.height} delete(s), "
            f"{self.kept.height} row(s) not in the file kept"
        )


def _series_rows(frame: pl.DataFrame) -> dict[str, dict]:
    return {row["model_col"]: row for row in frame.select(SERIES_COLUMNS).to_dicts()}


def _frame(rows: list[dict], extra: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    schema = {**_SERIES_SCHEMA, **(extra or {})}
    return pl.DataFrame([{k: row[k] for k in schema} for row in rows], schema=schema)


# What a new row holds in a column its file does not give (the table's defaults).
_NOT_GIVEN = {"unit": "", "description": "", "tags": []}


def plan_series_import(current: pl.DataFrame, incoming: pl.DataFrame, delete_missing: bool) -> SeriesImportPlan:
    """The changes that make `current` (dim_series) hold every row of `incoming` (a validated file), rows
    matched by model_col; rows only in `current` are deleted when `delete_missing`, else kept. A null in
    `incoming` (a column the file lacks) keeps the stored value, or the default in a new row."""
    old, new = _series_rows(current), _series_rows(incoming)
    inserts, updates = [], []
    for model_col, given in new.items():
        before = old.get(model_col)
        fallback = _NOT_GIVEN if before is None else before
        row = {column: fallback[column] if value is None else value for column, value in given.items()}
        if before is None:
            inserts.append(row)
            continue
        changes = [
            f"{column} {before[column]!r} -> {row[column]!r}"
            for column in SERIES_COLUMNS[1:]
            if before[column] != row[column]
        ]
        if changes:
            updates.append({**row, "changes": changes})
    missing = [row for model_col, row in sorted(old.items()) if model_col not in new]
    return SeriesImportPlan(
        inserts=_frame(inserts),
        updates=_frame(updates, {"changes": pl.List(pl.String)}),
        deletes=_frame(missing if delete_missing else []),
        kept=_frame([] if delete_missing else missing),
        remaining=len(old) + len(inserts) - (len(missing) if delete_missing else 0),
    )


def import_plan_problems(plan: SeriesImportPlan, incoming: pl.DataFrame) -> list[Problem]:
    """Rows of the file whose series_code a kept row (absent from the file) still holds: series_code is unique."""
    held = dict(zip(plan.kept["series_code"], plan.kept["model_col"], strict=True))
    return [
        Problem(
            row["source_file"],
            row["line"],
            f"series_code {row['series_code']!r} is held by {held[row['series_code']]!r}, which is not in the file "
            "and stays; add that row to the file or import with --delete-missing",
        )
        for row in incoming.filter(pl.col("series_code").is_in(list(held))).to_dicts()
    ]


def emptying_problems(plan: SeriesImportPlan, file: str, allow_empty: bool) -> list[Problem]:
    """An import that would leave dim_series empty (only a file with no rows can) is refused unless asked for:
    a truncated export or a header-only file is far likelier than the wish to drop every series."""
    if allow_empty or not plan.empties_table:
        return []
    return [
        Problem(
            file,
            1,
            f"the file has no rows: with --delete-missing it would delete all {plan.deletes.height} rows of "
            "core_energy.dim_series and leave it empty; refused (add --allow-empty if that is what you want)",
        )
    ]


_BACKUP_NAME = re.compile(r"^dim_series_(\d{4}-\d{2}-\d{2})(?:_v(\d+)(?:_(\d+))?)?\.csv$")


def backup_name(day: date, version: int, copy: int = 1) -> str:
    """The file name of the backup of dim_series content version `version` taken on `day`; a `copy` above 1
    (`..._v<version>_<copy>.csv`) holds other content under the same day and version (say, of a database
    recreated that day), which never replaces the first."""
    return f"dim_series_{day:%Y-%m-%d}_v{version}{f'_{copy}' if copy > 1 else ''}.csv"


def expired_backups(names: Iterable[str], today: date, keep_days: int) -> list[str]:
    """Backup file names dated `keep_days` days or more before `today`; the newest backup is always kept and
    names that are not backups are never listed."""
    dated = []
    for name in names:
        match = _BACKUP_NAME.match(name)
        try:
            day = date.fromisoformat(match.group(1)) if match else None
        except ValueError:  # digits that are no date: not a backup of ours
            day = None
        if day is not None:
            dated.append((day, int(match.group(2) or 0), int(match.group(3) or 1), name))
    if not dated:
        return []
    newest = max(dated)[-1]
    cutoff = today - timedelta(days=keep_days)
    return sorted(name for day, _, _, name in dated if day <= cutoff and name != newest)
