"""`make bench`: measured throughput of the bars, printed as tables.

1. the pure compute of every family (rows/s, peak memory);
2. (a) a full rebuild of every family through Dagster on PostgreSQL, against the read + COPY limit, on
   synthetic prices and on every daily file of ../shared/data when it is there; (b) the same for
   price_bars_1d and price_bars_multi_tf at ten times the assets;
3. the EMA kernel against polars' ewm_mean (1,000 assets x 3,650 closes x the default periods) and a full
   rebuild of every EMA family through Dagster against its limit;
4. a one-day incremental refresh of every bar and EMA family with one and with three years of history;
5. the symbol catalog: deriving 10,000 symbols x 50 versions, as-of lookups, the bars-to-symbol join;
6. a hostile 200 MB price file of one row repeated: read time and peak memory of its refusal;
7. intraday: one session of minute files for 200 instruments ingested and rolled through Dagster, and a year of
   one instrument's minutes rolled to every resolution against polars' group_by_dynamic;
8. executors: the one-day refresh in one process and on 1 and 2 Celery workers (Redis at
   TRADING_ASSETS_CELERY_BROKER, default 127.0.0.1:6379/8), for the scaling model of docs/scaling.md;
9. reads for backtests: prices and daily bars as known at a past time (revisions kept by trigger, bars rebuilt
   on demand), and the adjusted daily bars view with multi-day bars and EMAs built on it on demand.

Each stage runs in its own process so that its peak memory is its own.
"""

import argparse
import subprocess
import sys
import warnings

from trading_assets.config import PROJECT_ROOT

SHARED_INDEX = PROJECT_ROOT.parent / "shared" / "data" / "daily_index.csv"


def run_stage(stage: list[str]) -> None:
    from bench import emas
    from bench.bad_input import repeated_rows
    from bench.catalog import catalog_at_scale
    from bench.compute import compute_throughput
    from bench.executors import executors_compared
    from bench.intraday import ingest_day, roll_year
    from bench.known_at import known_at_and_adjusted
    from bench.pipeline import full_rebuild, shared_files_rebuild

    name, *numbers = stage
    if name == "compute":
        compute_throughput(int(numbers[0]), int(numbers[1]))
    elif name == "rebuild":
        full_rebuild(int(numbers[0]), int(numbers[1]))
    elif name == "rebuild-1d-multi":
        full_rebuild(int(numbers[0]), int(numbers[1]), ("1d", "multi_tf"))
    elif name == "shared-files":
        shared_files_rebuild(SHARED_INDEX)
    elif name == "ema-kernel":
        emas.kernel_against_ewm_mean(int(numbers[0]), int(numbers[1]))
    elif name == "ema-rebuild":
        emas.full_rebuild(int(numbers[0]), int(numbers[1]))
    elif name == "refresh":
        emas.one_day_refresh(int(numbers[0]), int(numbers[1]))
    elif name == "catalog":
        catalog_at_scale(*map(int, numbers))
    elif name == "bad-input":
        repeated_rows(int(numbers[0]))
    elif name == "intraday-ingest":
        ingest_day(int(numbers[0]))
    elif name == "intraday-roll":
        roll_year()
    elif name == "known-at":
        known_at_and_adjusted(int(numbers[0]), int(numbers[1]))
    elif name == "executors":
        executors_compared(int(numbers[0]), int(numbers[1]))
    else:
        raise SystemExit(f"unknown bench stage {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=int, default=100, help="assets of the compute and full-rebuild runs")
    parser.add_argument("--days", type=int, default=3650, help="days of history of those runs")
    parser.add_argument("--large-assets", type=int, default=1000, help="assets of the 1d + multi_tf rebuild")
    parser.add_argument("--refresh-assets", type=int, default=1000, help="assets of the one-day refreshes")
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    if args.stage:
        run_stage(args.stage)
        return

    stages = [
        ["compute", args.assets, args.days],
        ["rebuild", args.assets, args.days],
        *([["shared-files"]] if SHARED_INDEX.exists() else []),
        ["rebuild-1d-multi", args.large_assets, args.days],
        ["ema-kernel", args.large_assets, args.days],
        ["ema-rebuild", args.assets, args.days],
        ["refresh", args.refresh_assets, 1],
        ["refresh", args.refresh_assets, 3],
        ["catalog", 10_000, 50, args.large_assets, args.days],
        ["bad-input", 200],
        ["intraday-ingest", 200],
        ["intraday-roll"],
        ["executors", args.refresh_assets, 365],
        ["known-at", args.assets, args.days],
    ]
    for stage in stages:
        if stage[0] == "refresh" and stage[2] == 1:
            print("\none-day incremental refresh of every bar and EMA family through Dagster (one run)")
        subprocess.run([sys.executable, "-m", "bench", "--stage", *map(str, stage)], check=True)


if __name__ == "__main__":
    main()
