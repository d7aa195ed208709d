"""Reads and writes of the `core_energy` tables. Each writer runs inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import psycopg

from trading_assets.io.postgres import copy_frame, read_frame, scratch_table


@dataclass(frozen=True)
class SyncCounts:
    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    revised: int
    unchanged: int


def _pg_array(tags: list[str]) -> str:
    quoted = ('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in tags)
    return "{" + ",".join(quoted) + "}"


def sync_dim_series(conn: psycopg.Connection, config: pl.DataFrame) -> SyncCounts:
    """Make core_energy.dim_series equal `config` (inserts, updates and deletes)."""
    scratch_table(conn, "incoming_dim_series", "(like core_energy.dim_series including defaults)")
    rows = config.select(
        "model_col",
        "series_code",
        "unit",
        "freq",
        "description",
        pl.col("tags").map_elements(_pg_array, return_dtype=pl.String),
    )
    copy_frame(conn, psycopg.sql.SQL("incoming_dim_series"), rows)
    # Deletes run first so that a series_code can move to another model_col within one sync
    # (series_code is unique); a model_col whose series_code changed is removed and re-inserted.
    deleted = conn.execute(
        "delete from core_energy.dim_series d where not exists "
        "(select 1 from incoming_dim_series i where i.model_col = d.model_col)"
    ).rowcount
    recoded = conn.execute(
        "delete from core_energy.dim_series d using incoming_dim_series i "
        "where i.model_col = d.model_col and i.series_code <> d.series_code"
    ).rowcount
    written = conn.execute(
        """
        insert into core_energy.dim_series (model_col, series_code, unit, freq, description, tags)
        select model_col, series_code, unit, freq, description, tags from incoming_dim_series
        on conflict (model_col) do update
            set unit = excluded.unit, freq = excluded.freq, description = excluded.description,
                tags = excluded.tags, updated_at = now()
            where (dim_series.unit, dim_series.freq, dim_series.description, dim_series.tags)
                  is distinct from (excluded.unit, excluded.freq, excluded.description, excluded.tags)
        returning (xmax = 0) as inserted
        """
    ).fetchall()
    inserted = sum(1 for (is_new,) in written if is_new)
    return SyncCounts(inserted=inserted - recoded, updated=len(written) - inserted + recoded, deleted=deleted)


def rebuild_map_model_series(conn: psycopg.Connection) -> int:
    """Derive map_model_series from dim_series (truncate and reload); returns its row count."""
    conn.execute("truncate core_energy.map_model_series")
    return conn.execute(
        "insert into core_energy.map_model_series (model_col, series_code) "
        "select model_col, series_code from core_energy.dim_series"
    ).rowcount


def refresh_wide_view(conn: psycopg.Connection) -> int:
    """Rebuild v_series_wide (and the views on it); returns its number of series columns."""
    return conn.execute("select core_energy.refresh_v_series_wide()").fetchone()[0]


def known_series(conn: psycopg.Connection) -> set[str]:
    return {code for (code,) in conn.execute("select series_code from core_energy.dim_series")}


def read_dim_series(conn: psycopg.Connection) -> pl.DataFrame:
    return read_frame(
        conn,
        "select model_col, series_code, unit, freq, description, array_to_string(tags, ';') as tags "
        "from core_energy.dim_series order by model_col",
    )


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


def dim_map_mismatches(conn: psycopg.Connection) -> int:
    """Rows in dim_series or map_model_series without an identical row in the other."""
    return conn.execute(
        """
        select count(*) from (
            (select model_col, series_code from core_energy.dim_series
             except select model_col, series_code from core_energy.map_model_series)
            union all
            (select model_col, series_code from core_energy.map_model_series
             except select model_col, series_code from core_energy.dim_series)
        ) as differences
        """
    ).fetchone()[0]


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
