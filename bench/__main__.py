"""`make bench`: measured throughput of the bars, printed as tables.

1. the pure compute of every family (rows/s, peak memory);
2. a full rebuild of every family through Dagster on PostgreSQL, against the read + COPY limit, on synthetic
   prices and on every daily file of ../shared/data when it is there;
3. a one-day incremental refresh with one and with three years of history behind it.
"""

import argparse
import warnings

from bench.compute import compute_throughput
from bench.pipeline import full_rebuild, one_day_refresh, shared_files_rebuild
from trading_assets.config import PROJECT_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=int, default=100, help="assets of the compute and full-rebuild runs")
    parser.add_argument("--days", type=int, default=3650, help="days of history of those runs")
    parser.add_argument("--refresh-assets", type=int, default=200, help="assets of the one-day refreshes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")

    compute_throughput(args.assets, args.days)
    full_rebuild(args.assets, args.days)
    index = PROJECT_ROOT.parent / "shared" / "data" / "daily_index.csv"
    if index.exists():
        shared_files_rebuild(index)
    print(f"\none-day incremental refresh of every bar family through Dagster, {args.refresh_assets} assets")
    for years in (1, 3):
        seconds = one_day_refresh(args.refresh_assets, 365 * years)
        print(f"  with {years} year(s) of history: {seconds:.1f}s")


if __name__ == "__main__":
    main()
