"""trading_assets: the Dagster asset graph behind a trading system's data."""

import os

# Bulk writes stream rows to PostgreSQL while polars computes the next group of assets. Polars' workers on
# every core compete with the server's COPY for the CPU, and cost more CPU than they save: one core is left to the
# server unless POLARS_MAX_THREADS says otherwise. Measured on 2 cores, a calendar bar family's full
# rebuild: client CPU 3.6-4.3 s -> 3.1-3.6 s, the asset 6.2-8.2 s -> 5.6-6.5 s. Set before polars is imported.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
os.environ.setdefault("POLARS_MAX_THREADS", str(max(1, _CORES - 1)))
