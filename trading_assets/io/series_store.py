"""Reads and writes of the `core_energy` tables. Each writer runs inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
import psycopg
from psycopg.types.json import Jsonb

from trading_assets.compute.series import SERIES_COLUMNS, SeriesImportPlan
from trading_assets.io.postgres import copy_frame, read_frame, scratch_table


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    revised: int
    unchanged: int


@dataclass(frozen=True)
class SeriesState:
    """The content version of dim_series (core_energy.dim_series_state, bumped by its triggers)."""

    version: int
    changed_at: datetime | None
    changed_by: str | None


_SERIES_SCHEMA = {**dict.fromkeys(SERIES_COLUMNS[:5], pl.String), "tags": pl.List(pl.String)}


def read_consistently(conn: psycopg.Connection) -> None:
    """Make the rest of the transaction read one snapshot (the version and the rows it numbers agree).

    Must be the transaction's first statement."""
    conn.execute("set transaction isolation level repeatable read")


def dim_series_state(conn: psycopg.Connection) -> SeriesState:
    version, changed_at, changed_by = conn.execute(
        "select version, changed_at, changed_by from core_energy.dim_series_state"
    ).fetchone()
    return SeriesState(version, changed_at, changed_by)


def lock_dim_series(conn: psycopg.Connection) -> SeriesState:
    """Hold off other writers of dim_series until the transaction ends; returns its state from then on."""
    conn.execute("lock table core_energy.dim_series in share row exclusive mode")
    return dim_series_state(conn)


def read_dim_series(conn: psycopg.Connection) -> pl.DataFrame:
    """Every dim_series row (columns of SERIES_COLUMNS, tags a list), by model_col."""
    return read_frame(
        conn,
        "select model_col, series_code, unit, freq, description, tags from core_energy.dim_series order by model_col",
        (),
        schema=_SERIES_SCHEMA,
    )


def _records(frame: pl.DataFrame) -> Jsonb:
    return Jsonb(frame.select(SERIES_COLUMNS).to_dicts())


def apply_series_import(conn: psycopg.Connection, plan: SeriesImportPlan, allow_empty: bool = False) -> None:
    """Apply an import plan to dim_series (inside the caller's transaction, after `lock_dim_series`).

    Raises, so the caller's transaction rolls back, when the table held rows and would be left empty (unless
    `allow_empty`): whatever planned it, an import never empties the golden table by itself."""
    # Unique series codes are checked at commit, so a file may move codes between model_cols.
    conn.execute("set constraints core_energy.dim_series_series_code_key deferred")
    if not plan.deletes.is_empty():
        conn.execute(
            "delete from core_energy.dim_series where model_col = any(%s)", (plan.deletes["model_col"].to_list(),)
        )
    if not plan.updates.is_empty():
        conn.execute(
            """
            update core_energy.dim_series d
               set series_code = r.series_code, unit = r.unit, freq = r.freq, description = r.description,
                   tags = array(select jsonb_array_elements_text(r.tags))
              from jsonb_to_recordset(%s) as r (model_col text, series_code text, unit text, freq text,
                                                 description text, tags jsonb)
             where d.model_col = r.model_col
            """,
            (_records(plan.updates),),
        )
    if not plan.inserts.is_empty():
        conn.execute(
            """
            insert into core_energy.dim_series (model_col, series_code, unit, freq, description, tags)
            select r.model_col, r.series_code, r.unit, r.freq, r.description,
                   array(select jsonb_array_elements_text(r.tags))
              from jsonb_to_recordset(%s) as r (model_col text, series_code text, unit text, freq text,
                                                 description text, tags jsonb)
            """,
            (_records(plan.inserts),),
        )
    conn.execute("set constraints core_energy.dim_series_series_code_key immediate")
    emptied = (
        not plan.deletes.is_empty()
        and not conn.execute("select exists (select from core_energy.dim_series)").fetchone()[0]
    )
    if emptied and not allow_empty:
        raise ValueError(
            f"the import would delete all {plan.deletes.height} rows of core_energy.dim_series and leave it empty; "
            "refused (allow_empty not given)"
        )


def rebuild_map_model_series(conn: psycopg.Connection) -> int:
    """Derive map_model_series from dim_series through its refresh function (the only writer the database
    allows); returns its row count."""
    return conn.execute("select core_energy.refresh_map_model_series()").fetchone()[0]


def refresh_wide_view(conn: psycopg.Connection) -> int:
    """Rebuild v_series_wide (and the views on it); returns its number of series columns."""
    return conn.execute("select core_energy.refresh_v_series_wide()").fetchone()[0]


def known_series(conn: psycopg.Connection) -> set[str]:
    return {code for (code,) in conn.execute("select series_code from core_energy.dim_series")}


def upsert_observations(conn: psycopg.Connection, observations: pl.DataFrame) -> UpsertCounts:
    """Insert new observations and revise changed ones; a revised row's old value goes to the history."""
    scratch_table(
        conn, "incoming_observations", "(series_code text, obs_date date, value double precision, source_file text)"
    )
    copy_frame(
        conn,
        psycopg.sql.SQL("incoming_observations"),
        observations,
        ["series_code", "obs_date", "value", "source_file"],
    )
    revised = conn.execute(
        """
        insert into core_energy.fact_series_value_history (series_code, obs_date, value, loaded_at, source_file)
        select f.series_code, f.obs_date, f.value, f.loaded_at, f.source_file
        from core_energy.fact_series_value f
        join incoming_observations i using (series_code, obs_date)
        where f.value is distinct from i.value
        """
    ).rowcount
    written = conn.execute(
        """
        insert into core_energy.fact_series_value (series_code, obs_date, value, source_file)
        select series_code, obs_date, value, source_file from incoming_observations
        on conflict (series_code, obs_date) do update
            set value = excluded.value, source_file = excluded.source_file, loaded_at = now()
            where fact_series_value.value is distinct from excluded.value
        """
    ).rowcount
    return UpsertCounts(inserted=written - revised, revised=revised, unchanged=observations.height - written)


def dim_map_differences(conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """`model_col -> series_code` pairs only in dim_series, and only in map_model_series."""
    pairs = "select model_col || ' -> ' || series_code from core_energy.{}"
    dim, mapped = ({row for (row,) in conn.execute(pairs.format(t))} for t in ("dim_series", "map_model_series"))
    return sorted(dim - mapped), sorted(mapped - dim)


def model_cols(conn: psycopg.Connection) -> list[str]:
    return [c for (c,) in conn.execute("select model_col from core_energy.dim_series order by model_col")]


def wide_view_columns(conn: psycopg.Connection) -> list[str]:
    """Series columns of v_series_wide (all but `date`), in view order."""
    return [
        c
        for (c,) in conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'core_energy' and table_name = 'v_series_wide' and column_name <> 'date' "
            "order by ordinal_position"
        )
    ]


def latest_observations(conn: psycopg.Connection) -> pl.DataFrame:
    """Per dim_series row: series_code, freq and the newest obs_date (null when it has none)."""
    return read_frame(
        conn,
        "select d.series_code, d.freq, max(f.obs_date) as last_obs_date, count(f.obs_date) as observations "
        "from core_energy.dim_series d left join core_energy.fact_series_value f using (series_code) "
        "group by d.series_code, d.freq order by d.series_code",
        schema={"series_code": pl.String, "freq": pl.String, "last_obs_date": pl.Date, "observations": pl.Int64},
    )


def wide_view_ends(conn: psycopg.Connection, rows: int = 3) -> pl.DataFrame:
    """The first and last dates of core_energy.v_series_wide, every column."""
    return read_frame(
        conn,
        "(select * from core_energy.v_series_wide order by date limit %s) union all "
        "(select * from core_energy.v_series_wide order by date desc limit %s) order by date",
        (rows, rows),
    ).unique(maintain_order=True)


def edit_versions(conn: psycopg.Connection) -> tuple[str, str]:
    """The data versions of the two tables users edit with SQL: dim_series and wide_view_followers."""
    return (str(dim_series_state(conn).version), followers_digest(conn))


def followers_digest(conn: psycopg.Connection) -> str:
    """A digest of core_energy.wide_view_followers (the data version of its asset)."""
    return conn.execute(
        "select md5(coalesce(string_agg(view_schema || '.' || view_name, ',' order by view_schema, view_name), '')) "
        "from core_energy.wide_view_followers"
    ).fetchone()[0]


def observations_per_month(conn: psycopg.Connection) -> pl.DataFrame:
    """(month, rows) of core_energy.fact_series_value (a small table: counted)."""
    return read_frame(
        conn,
        "select date_trunc('month', obs_date)::date as month, count(*)::bigint as rows "
        "from core_energy.fact_series_value group by 1",
        schema={"month": pl.Date, "rows": pl.Int64},
    )
