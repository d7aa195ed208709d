"""The `trading` group: tables of the data maintenance guide built from files and from the platform's series."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute import macro, options, vix
from trading_assets.compute.calendars import session_open
from trading_assets.compute.validation import rows_in_window
from trading_assets.config import Settings
from trading_assets.defs.landing import file_source
from trading_assets.defs.metadata.assets import FACT_SERIES_VALUE, FOLLOW_PARENTS
from trading_assets.defs.partitions import run_window
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview, table_metadata
from trading_assets.io import trading_store
from trading_assets.io.postgres import read_frame
from trading_assets.sources import option_files, trade_files, vix_files

GROUP = "trading"
MACRO_SIGNALS = dg.AssetKey([GROUP, "macro_signals"])
VIX_FILES = dg.AssetKey([GROUP, "vix_files"])
VIX_TERM_STRUCTURE = dg.AssetKey([GROUP, "vix_term_structure"])
TRADE_FILES = dg.AssetKey([GROUP, "trade_files"])
TRADE_HISTORY = dg.AssetKey([GROUP, "trade_history"])
OPTION_FILES = dg.AssetKey([GROUP, "option_files"])
OPTION_CHAIN_SNAPSHOTS = dg.AssetKey([GROUP, "option_chain_snapshots"])
ML_FEATURES = dg.AssetKey([GROUP, "ml_features"])
INTRADAY_FILES = dg.AssetKey([GROUP, "intraday_files"])
MULTI_RESOLUTION_BARS = dg.AssetKey([GROUP, "multi_resolution_bars"])
# The group's observed source files (their version is their contents).
SOURCES = [VIX_FILES, TRADE_FILES, OPTION_FILES, INTRADAY_FILES]
CHAIN_QUOTES_VALID = "chain_quotes_valid"
STRIKES_ON_GRID = "strikes_on_grid"
CHAIN_FRESH_IN_SESSION = "chain_fresh_in_session"
FEATURES_COMPLETE = "features_complete"
# A snapshot older than this while its exchange is in session means the feed stopped.
SESSION_STALE_AFTER = timedelta(minutes=5)
TRADES_NEVER_DELETED = "trades_never_deleted"
TRADE_FILES_RECORDED = "trade_files_recorded"
VIX_FRONT_LIVE = "vix_front_not_expired"
VIX_CURVE_SANE = "vix_curve_sane"
MACRO_KNOWN_WHEN_USED = "macro_values_known_when_used"
MACRO_SLOPES_MATCH = "macro_slopes_match_yields"
# A trading day's rows land by the next morning (VX settles after the close, yields are published the day after):
# a long weekend apart at most.
LANDS_DAILY = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=4), warn_window=timedelta(days=2))


def macro_checks(conn: psycopg.Connection) -> list[dg.AssetCheckResult]:
    """No row uses a monthly value before its release day; the slopes are the differences of the yields."""
    early = conn.execute(
        """
        select count(*) filter (where cpi_month + interval '1 month' + make_interval(days => %s - 1) > trade_date),
               count(*) filter (where unrate_month + interval '1 month' + make_interval(days => %s - 1) > trade_date)
        from trading.macro_signals
        """,
        (macro.RELEASE_DAY["CPIAUCSL"], macro.RELEASE_DAY["UNRATE"]),
    ).fetchone()
    slopes = conn.execute(
        "select count(*) from trading.macro_signals where abs(slope_10y_2y - (dgs10 - dgs2)) > 1e-9 "
        "or abs(slope_10y_3m - (dgs10 - dgs3mo)) > 1e-9"
    ).fetchone()[0]
    return [
        dg.AssetCheckResult(
            check_name=MACRO_KNOWN_WHEN_USED,
            asset_key=MACRO_SIGNALS,
            passed=early == (0, 0),
            metadata={"cpi_rows_before_release": early[0], "unrate_rows_before_release": early[1]},
        ),
        dg.AssetCheckResult(
            check_name=MACRO_SLOPES_MATCH, asset_key=MACRO_SIGNALS, passed=slopes == 0, metadata={"rows": slopes}
        ),
    ]


def trading_table_asset(
    key: dg.AssetKey,
    *,
    deps: list[dg.AssetDep | dg.AssetKey],
    partitions: dg.MonthlyPartitionsDefinition,
    checks: list[dg.AssetCheckSpec],
    description: str,
    freshness: dg.FreshnessPolicy,
    automation: dg.AutomationCondition | None = None,
):
    """A monthly-partitioned table of the group whose run may end without a materialization: when a blocking
    check fails, its writes are rolled back and only the checks are reported."""
    return dg.multi_asset(
        name=key.path[-1],
        specs=[
            dg.AssetSpec(
                key,
                group_name=GROUP,
                deps=deps,
                kinds={"postgres", "polars"},
                description=description,
                freshness_policy=freshness,
                automation_condition=automation,
                skippable=True,
            )
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=checks,
    )


def finish(
    conn: psycopg.Connection, checks: list[dg.AssetCheckResult], blocking: set[str], metadata: dict
) -> list[dg.AssetCheckResult | dg.MaterializeResult]:
    """The run's outcome, to be yielded once its transaction has ended (a materialization reported before the
    commit would stand even if the commit failed): its checks alone, its writes rolled back, when a blocking
    one failed; else the materialization with them."""
    if any(not c.passed and c.check_name in blocking for c in checks):
        conn.rollback()
        return list(checks)
    return [dg.MaterializeResult(metadata=metadata, check_results=checks)]


def vix_folder(settings: Settings) -> Path:
    return settings.landing / "trading" / "vix"


def vix_checks(conn: psycopg.Connection) -> list[dg.AssetCheckResult]:
    """The front contract never expired on its date; the curve looks like a VX curve (WARN)."""
    expired = conn.execute(
        "select count(*) from trading.vix_term_structure where source = 'vx_futures' and front_expiry <= trade_date"
    ).fetchone()[0]
    odd = conn.execute(
        """
        select trade_date::text, exchange,
               concat_ws('; ',
                   case when front_expiry > trade_date + 40 then 'front expires ' || (front_expiry - trade_date)
                        || ' days ahead: nearer contracts missing' end,
                   case when next_expiry > front_expiry + 40 then 'next expires '
                        || (next_expiry - front_expiry) || ' days after the front: a contract month missing' end,
                   case when exists (select from unnest(curve) p where not p > 0) then 'a price not positive' end,
                   case when abs(front_price / vix_spot - 1) > 0.5 then 'front ' || front_price || ' vs spot '
                        || vix_spot end)
        from trading.vix_term_structure
        where front_expiry > trade_date + 40 or next_expiry > front_expiry + 40
           or exists (select from unnest(curve) p where not p > 0) or abs(front_price / vix_spot - 1) > 0.5
        order by trade_date
        """
    ).fetchall()
    return [
        dg.AssetCheckResult(
            check_name=VIX_FRONT_LIVE, asset_key=VIX_TERM_STRUCTURE, passed=expired == 0, metadata={"rows": expired}
        ),
        dg.AssetCheckResult(
            check_name=VIX_CURVE_SANE,
            asset_key=VIX_TERM_STRUCTURE,
            passed=not odd,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rows": len(odd), "first": dg.MetadataValue.json([list(r) for r in odd[:20]])},
        ),
    ]


def trade_folder(settings: Settings) -> Path:
    return settings.landing / "trading" / "trades"


def trade_checks(conn: psycopg.Connection, waiting: int) -> list[dg.AssetCheckResult]:
    """Every trade ever inserted is still there; every line of the landed files is recorded or rejected."""
    stored, inserted = conn.execute(
        "select (select count(*) from trading.trade_history), rows_inserted from trading.trade_history_inserted"
    ).fetchone()
    return [
        dg.AssetCheckResult(
            check_name=TRADES_NEVER_DELETED,
            asset_key=TRADE_HISTORY,
            passed=stored == inserted,
            metadata={"rows": stored, "rows_ever_inserted": inserted},
        ),
        dg.AssetCheckResult(
            check_name=TRADE_FILES_RECORDED,
            asset_key=TRADE_HISTORY,
            passed=waiting == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"trades_of_other_months": waiting},
        ),
    ]


def option_folder(settings: Settings) -> Path:
    return settings.landing / "trading" / "options"


def read_option_quotes(folder: Path) -> pl.DataFrame:
    """Every quote of the landed chain files (option_files.QUOTE_SCHEMA)."""
    lean = [option_files.read_lean_universe(p) for p in sorted(folder.glob("lean/*/*.csv"))]
    nse = [option_files.read_nse_chain(p) for p in sorted(folder.glob("nse/*/*.csv"))]
    return pl.concat([pl.DataFrame(schema=option_files.QUOTE_SCHEMA), *lean, *nse])


def chain_checks(conn: psycopg.Connection, now: datetime) -> list[dg.AssetCheckResult]:
    """No negative, crossed or expired quote is stored; strikes sit on their chain's grid (WARN); while an
    exchange with recent snapshots is in session, its newest is fresh (WARN)."""
    invalid = conn.execute(
        "select count(*) from trading.option_chain_snapshots where bid > ask and ask > 0 or expires_at <= ts "
        "or ltp < 0 or bid < 0 or ask < 0 or iv < 0"
    ).fetchone()[0]
    off_grid = conn.execute(
        """
        with steps as (
            select ts, exchange, underlying, expiry, strike,
                   strike - lag(strike) over (partition by ts, exchange, underlying, expiry order by strike) as step
            from (select distinct ts, exchange, underlying, expiry, strike from trading.option_chain_snapshots) s
        ), grid as (
            select ts, exchange, underlying, expiry, min(strike) as first,
                   mode() within group (order by step) filter (where step > 0) as step
            from steps group by 1, 2, 3, 4
        )
        select s.underlying, s.expiry::text, s.strike, g.step
        from steps s join grid g using (ts, exchange, underlying, expiry)
        where g.step > 0 and abs((s.strike - g.first) / g.step - round((s.strike - g.first) / g.step)) > 1e-6
        order by 1, 2, 3 limit 50
        """
    ).fetchall()
    newest = conn.execute(
        "select exchange, max(ts) from trading.option_chain_snapshots where ts > %s - interval '7 days' group by 1",
        (now,),
    ).fetchall()
    stale = [
        (exchange, str(last))
        for exchange, last in newest
        if session_open(exchange, now) and now - last > SESSION_STALE_AFTER
    ]
    return [
        dg.AssetCheckResult(
            check_name=CHAIN_QUOTES_VALID,
            asset_key=OPTION_CHAIN_SNAPSHOTS,
            passed=invalid == 0,
            metadata={"rows": invalid},
        ),
        dg.AssetCheckResult(
            check_name=STRIKES_ON_GRID,
            asset_key=OPTION_CHAIN_SNAPSHOTS,
            passed=not off_grid,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "off_grid": len(off_grid),
                "first": dg.MetadataValue.json([list(map(str, r)) for r in off_grid[:20]]),
            },
        ),
        dg.AssetCheckResult(
            check_name=CHAIN_FRESH_IN_SESSION,
            asset_key=OPTION_CHAIN_SNAPSHOTS,
            passed=not stale,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"stale_exchanges": dg.MetadataValue.json(stale)},
        ),
    ]


def features_checks(conn: psycopg.Connection) -> list[dg.AssetCheckResult]:
    """Every stored snapshot has its features row, and every features row is complete (WARN)."""
    missing, incomplete = conn.execute(
        """
        select (select count(*) from (select distinct trade_date, ts, exchange, underlying
                                      from trading.option_chain_snapshots) s
                where not exists (select from trading.ml_features f where (f.trade_date, f.ts, f.exchange,
                                  f.underlying) = (s.trade_date, s.ts, s.exchange, s.underlying))),
               (select count(*) from trading.ml_features where not complete)
        """
    ).fetchone()
    return [
        dg.AssetCheckResult(
            check_name=FEATURES_COMPLETE,
            asset_key=ML_FEATURES,
            passed=missing == 0 and incomplete == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"snapshots_without_features": missing, "incomplete_rows": incomplete},
        )
    ]


def build_trading_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    macro_deps = [
        dg.AssetDep(
            FACT_SERIES_VALUE, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-macro.MONTHS_BEFORE)
        )
    ]

    @trading_table_asset(
        MACRO_SIGNALS,
        deps=macro_deps,
        partitions=partitions,
        freshness=LANDS_DAILY,
        automation=FOLLOW_PARENTS,
        checks=[
            dg.AssetCheckSpec(
                MACRO_KNOWN_WHEN_USED,
                asset=MACRO_SIGNALS,
                blocking=True,
                description="no row uses a CPI or unemployment value before its release day (no look-ahead)",
            ),
            dg.AssetCheckSpec(
                MACRO_SLOPES_MATCH,
                asset=MACRO_SIGNALS,
                blocking=True,
                description="slopes equal the differences of the yields",
            ),
        ],
        description="Yield-curve slopes (10y-2y, 10y-3m), CPI year over year and the unemployment change per "
        "Treasury business day, from the FRED series of core_energy.fact_series_value; a monthly value counts "
        f"from its release (CPI from day {macro.RELEASE_DAY['CPIAUCSL']} of the next month, unemployment from day "
        f"{macro.RELEASE_DAY['UNRATE']}), never earlier.",
    )
    def macro_signals(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        codes = [*macro.DAILY_SERIES, *macro.MONTHLY_SERIES]
        since = window.start - timedelta(days=31 * macro.MONTHS_BEFORE) if window.start else None
        with warehouse.transaction() as conn:
            observations = read_frame(
                conn,
                sql.SQL(
                    "select series_code, obs_date, value from core_energy.fact_series_value "
                    "where series_code = any({codes}) and obs_date < {end}{since}"
                ).format(
                    codes=sql.Literal(codes),
                    end=sql.Literal(window.end),
                    since=sql.SQL(" and obs_date >= {}").format(sql.Literal(since)) if since else sql.SQL(""),
                ),
                schema=macro.OBSERVATION_SCHEMA,
            )
            signals = macro.macro_signals(observations, window.start, window.end)
            removed = trading_store.replace_window(conn, "macro_signals", signals, window.start, window.end)
            metadata = {
                **table_metadata(conn, "trading.macro_signals"),
                "run_rows_written": signals.height,
                "run_rows_removed": removed,
                "missing_series": ", ".join(c for c in codes if c not in set(observations["series_code"])) or "none",
                "preview": preview(signals.tail(5)),
                "seconds": round(time.perf_counter() - started, 3),
            }
            outcome = finish(conn, macro_checks(conn), {MACRO_KNOWN_WHEN_USED, MACRO_SLOPES_MATCH}, metadata)
        yield from outcome

    folder = vix_folder(settings)

    vix_source_files = file_source(
        VIX_FILES,
        folder,
        "*.csv",
        "VX contract files (CFE_*_VX.csv), VIX spot files (DATE, VIX, SP500) and India VIX files "
        "(india_vix*.csv: DATE, VIX, NIFTY)",
    )

    @trading_table_asset(
        VIX_TERM_STRUCTURE,
        deps=[VIX_FILES],
        partitions=partitions,
        freshness=LANDS_DAILY,
        checks=[
            dg.AssetCheckSpec(
                VIX_FRONT_LIVE,
                asset=VIX_TERM_STRUCTURE,
                blocking=True,
                description="no date's front contract has expired on it (the roll is on the expiry date)",
            ),
            dg.AssetCheckSpec(
                VIX_CURVE_SANE,
                asset=VIX_TERM_STRUCTURE,
                description="WARN: front within 40 days, no contract month missing between front and next, "
                "prices positive, front within 50% of spot",
            ),
        ],
        description="The VIX term structure per trading date from the CFE VX contract files: front and next "
        "month by expiry (rolled on the expiry date), contango in percent, the curve of up to 8 contracts, roll "
        "yield per 30 days, VIX spot and the S&P 500's realized volatility over 5 and 20 sessions; India VIX "
        "(no futures) as its documented fallback.",
    )
    def vix_term_structure(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        paths = sorted(folder.glob("*.csv"))
        contract_paths = [p for p in paths if p.name.startswith("CFE_")]
        india_paths = [p for p in paths if p.name.lower().startswith("india_vix")]
        spot_paths = [p for p in paths if p not in contract_paths and p not in india_paths]
        contracts = vix_files.read_contracts(contract_paths)
        spots = [vix_files.read_spot(p, "SP500") for p in spot_paths]
        spot = vix_files.merged_spot(spot_paths, [s for s, _ in spots])
        india = [vix_files.read_spot(p, "NIFTY") for p in india_paths]
        frames = []
        if not contracts.rows.is_empty():
            frames.append(vix.term_structure(contracts.rows, spot, window.start, window.end))
        frames += [vix.india_vix_fallback(s, window.start, window.end) for s, _ in india]
        rows = pl.concat(frames) if frames else pl.DataFrame(schema=vix.TERM_SCHEMA)
        rejects = pl.concat([contracts.rejects, *(r for _, r in spots + india)])
        with warehouse.transaction() as conn:
            removed = trading_store.replace_window(conn, "vix_term_structure", rows, window.start, window.end)
            trading_store.replace_rejects(conn, "vix_term_structure", [p.name for p in paths], rejects)
            metadata = {
                **table_metadata(conn, "trading.vix_term_structure"),
                "run_rows_written": rows.height,
                "run_rows_removed": removed,
                "files": len(paths),
                "rejected_rows": rejects.height,
                "not_traded_rows": contracts.not_traded,
                "preview": preview(rows.drop("curve").tail(5)),
                "seconds": round(time.perf_counter() - started, 3),
            }
            outcome = finish(conn, vix_checks(conn), {VIX_FRONT_LIVE}, metadata)
        yield from outcome

    trades = trade_folder(settings)

    trade_source_files = file_source(
        TRADE_FILES, trades, "*.csv", f"Paper-trade files (*.csv: {', '.join(trade_files.COLUMNS)})"
    )

    @trading_table_asset(
        TRADE_HISTORY,
        deps=[TRADE_FILES],
        partitions=partitions,
        freshness=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=7)),
        checks=[
            dg.AssetCheckSpec(
                TRADES_NEVER_DELETED,
                asset=TRADE_HISTORY,
                blocking=True,
                description="as many trades as were ever inserted: the table is permanent, retention never "
                "touches it and the database refuses DELETE and TRUNCATE",
            ),
            dg.AssetCheckSpec(
                TRADE_FILES_RECORDED,
                asset=TRADE_HISTORY,
                description="WARN: no trade of the landed files waits for a month this run did not cover",
            ),
        ],
        description="Paper trades from the trade files, one row per order_id, by fill date (UTC). Permanent: a "
        "run inserts the new trades of its months and never deletes; a stored order_id sent again with other "
        "values is rejected with its file and line (a correction is a new trade).",
    )
    def trade_history(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        paths = sorted(trades.glob("*.csv"))
        landed, rejects = trade_files.read_trades(paths)
        in_window = rows_in_window(landed, "trade_date", window.start, window.end)
        with warehouse.transaction() as conn:
            inserted, conflicts = trading_store.record_trades(conn, in_window)
            trading_store.replace_rejects(
                conn, "trade_history", [p.name for p in paths], pl.concat([rejects, conflicts])
            )
            waiting = conn.execute(
                "select count(*) from unnest(%s::text[]) o where not exists "
                "(select from trading.trade_history t where t.order_id = o)",
                (landed["order_id"].to_list(),),
            ).fetchone()[0]
            metadata = {
                **table_metadata(conn, "trading.trade_history"),
                "run_rows_written": inserted,
                "already_recorded": in_window.height - inserted - conflicts.height,
                "rejected_rows": rejects.height + conflicts.height,
                "files": len(paths),
                "seconds": round(time.perf_counter() - started, 3),
            }
            outcome = finish(conn, trade_checks(conn, waiting), {TRADES_NEVER_DELETED}, metadata)
        yield from outcome

    option_landing = option_folder(settings)

    option_source_files = file_source(
        OPTION_FILES,
        option_landing,
        "*/*/*.csv",
        "Option-chain files: lean/<root>/<YYYYMMDD>.csv (Lean universes) and nse/<YYYY-MM-DDTHH-MM>/"
        "option-chain-ED-<UNDERLYING>-<DD-Mon-YYYY>.csv (NSE exports, the folder naming the snapshot's "
        "Asia/Kolkata time)",
    )

    @trading_table_asset(
        OPTION_CHAIN_SNAPSHOTS,
        deps=[OPTION_FILES],
        partitions=partitions,
        freshness=LANDS_DAILY,
        checks=[
            dg.AssetCheckSpec(
                CHAIN_QUOTES_VALID,
                asset=OPTION_CHAIN_SNAPSHOTS,
                blocking=True,
                description="no stored quote is negative, crossed (bid above ask) or past its expiry",
            ),
            dg.AssetCheckSpec(
                STRIKES_ON_GRID,
                asset=OPTION_CHAIN_SNAPSHOTS,
                description="WARN: every strike sits on its chain's strike grid (the most common step)",
            ),
            dg.AssetCheckSpec(
                CHAIN_FRESH_IN_SESSION,
                asset=OPTION_CHAIN_SNAPSHOTS,
                description=f"WARN: while its exchange is in session, the newest snapshot of an exchange with "
                f"snapshots this week is at most {SESSION_STALE_AFTER} old",
            ),
        ],
        description="One row per (snapshot instant, exchange, underlying, expiry, strike, type): last price, volume, "
        "OI, IV and greeks where the source has them, bid/ask and spread, the underlying (put-call parity where the "
        "source lacks it), moneyness and the time to the exchange's expiry time. Every snapshot is kept; a quote "
        "that is negative, crossed or past expiry is rejected with its file and line.",
    )
    def option_chain_snapshots(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        quotes, rejects = options.reject_quotes(read_option_quotes(option_landing))
        rows = rows_in_window(options.snapshot_rows(quotes), "trade_date", window.start, window.end)
        with warehouse.transaction() as conn:
            removed = trading_store.replace_window(conn, "option_chain_snapshots", rows, window.start, window.end)
            files = sorted({*quotes["source_file"].unique().to_list(), *rejects["source_file"].unique().to_list()})
            trading_store.replace_rejects(conn, "option_chain_snapshots", files, rejects)
            metadata = {
                **table_metadata(conn, "trading.option_chain_snapshots"),
                "run_rows_written": rows.height,
                "run_rows_removed": removed,
                "snapshots": rows.select(options.SNAPSHOT).n_unique(),
                "rejected_rows": rejects.height,
                "seconds": round(time.perf_counter() - started, 3),
            }
            checks = chain_checks(conn, datetime.now(UTC))
            outcome = finish(conn, checks, {CHAIN_QUOTES_VALID}, metadata)
        yield from outcome

    @trading_table_asset(
        ML_FEATURES,
        deps=[dg.AssetDep(OPTION_CHAIN_SNAPSHOTS, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-2))],
        partitions=partitions,
        freshness=LANDS_DAILY,
        automation=FOLLOW_PARENTS,
        checks=[
            dg.AssetCheckSpec(
                FEATURES_COMPLETE,
                asset=ML_FEATURES,
                description="WARN: every snapshot has its features row and every row has the underlying, the OI "
                "put/call ratio, max pain and ATM IV",
            )
        ],
        description="Features per option-chain snapshot: put/call ratios (OI, volume, ITM OI), max pain, ATM IV, "
        "IV skew (25 delta, or strikes at 95%/105%), ITM OI by side, OI change over 5 and 20 sessions (3 and 15 "
        "minutes intraday, by time, not rows), and every feature as JSONB.",
    )
    def ml_features(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        in_window = sql.SQL("trade_date < {}").format(sql.Literal(window.end))
        if window.start:
            in_window = sql.SQL("trade_date >= {} and ").format(sql.Literal(window.start)) + in_window
        with warehouse.transaction() as conn:
            columns = sql.SQL(", ").join(map(sql.Identifier, options.FEATURE_INPUT_SCHEMA))
            snapshots = read_frame(
                conn,
                sql.SQL("select {} from trading.option_chain_snapshots where ").format(columns) + in_window,
                schema=options.FEATURE_INPUT_SCHEMA,
            )
            history = read_frame(
                conn,
                sql.SQL(
                    "select ts, exchange, underlying, min(trade_date) as trade_date, sum(oi)::bigint as total_oi "
                    "from trading.option_chain_snapshots where trade_date >= {} and trade_date < {} group by 1, 2, 3"
                ).format(
                    sql.Literal((window.start or window.end) - timedelta(days=45)),
                    sql.Literal(window.start or window.end),
                ),
                schema={
                    **{k: options.FEATURE_SCHEMA[k] for k in options.SNAPSHOT},
                    "trade_date": pl.Date,
                    "total_oi": pl.Int64,
                },
            )
            rows = options.with_payload(options.features(snapshots, history))
            removed = trading_store.replace_window(conn, "ml_features", rows, window.start, window.end)
            metadata = {
                **table_metadata(conn, "trading.ml_features"),
                "run_rows_written": rows.height,
                "run_rows_removed": removed,
                "incomplete": int((~rows["complete"]).sum()),
                "preview": preview(rows.drop("features").tail(5)),
                "seconds": round(time.perf_counter() - started, 3),
            }
            outcome = finish(conn, features_checks(conn), set(), metadata)
        yield from outcome

    return [
        macro_signals,
        vix_source_files,
        vix_term_structure,
        trade_source_files,
        trade_history,
        option_source_files,
        option_chain_snapshots,
        ml_features,
    ]


PARTITIONS_AHEAD_JOB = "trading_partitions_ahead"
DAYS_AHEAD = 7


def build_partitions_ahead(settings: Settings) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """A daily job creating the coming days' partitions of the day-partitioned tables, so that a session's first
    writes never wait on DDL (and a failure to create them shows days before it matters)."""

    @dg.op(description=f"create the partitions of the next {DAYS_AHEAD} days of every day-partitioned trading table")
    def create_partitions_ahead(context: dg.OpExecutionContext, warehouse: Warehouse) -> None:
        today = datetime.now(UTC).date()
        with warehouse.transaction() as conn:
            made = trading_store.partitions_ahead(conn, today, today + timedelta(days=DAYS_AHEAD))
        context.log.info(f"created {made} partition(s) for {today}..{today + timedelta(days=DAYS_AHEAD)}")

    @dg.job(name=PARTITIONS_AHEAD_JOB, description="Create the coming days' partitions of the trading tables.")
    def partitions_ahead() -> None:
        create_partitions_ahead()

    schedule = dg.ScheduleDefinition(
        name="trading_partitions_daily",
        job=partitions_ahead,
        cron_schedule="5 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return partitions_ahead, schedule
