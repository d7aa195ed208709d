"""The same one-day refresh of every bar and EMA family, in one process and on Celery workers (1, then 2).

Each measured day adds one day of prices for every asset, then runs bars and EMAs (job refresh_market, changed
days only) with the executor named; a first day, not reported, warms the server's cache. The figures feed the
scaling model in docs/scaling.md.
"""

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from bench.emas import built_history, land_day, run_emas
from bench.pipeline import bench_platform
from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.defs.jobs import REFRESH_MARKET_JOB

BROKER = os.environ.get("TRADING_ASSETS_CELERY_BROKER") or "redis://127.0.0.1:6379/8"


def _workers(count: int, logs: Path) -> list[subprocess.Popen]:
    started = []
    for n in range(count):
        log = logs / f"worker{n}.log"
        started.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "trading-assets"), "worker", "--name", f"bench{n}"],
                cwd=PROJECT_ROOT,
                env=os.environ.copy(),
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 90
    for n in range(count):
        while " ready." not in (logs / f"worker{n}.log").read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {n} did not start: {(logs / f'worker{n}.log').read_text()[-2000:]}")
            time.sleep(0.3)
    return started


def executors_compared(assets: int, history_days: int) -> None:
    print(f"\nexecutors: one-day refresh of every bar and EMA family, {assets} assets x {history_days} days of history")
    print(f"  {'executor':<22} {'wall s':>8} {'in assets s':>12} {'steps':>6} {'overhead/step s':>16}")
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        end = datetime.now(UTC).date() - timedelta(days=1)
        days = [end - timedelta(days=3 - n) for n in range(4)]
        prices = built_history(settings, url, assets, history_days, days)
        redis.Redis.from_url(BROKER).flushdb()
        plans = [("in-process (warm-up)", 0), ("in-process", 0), ("celery, 1 worker", 1), ("celery, 2 workers", 2)]
        for (name, workers), day in zip(plans, days, strict=True):
            land_day(url, prices, day)
            os.environ["TRADING_ASSETS_EXECUTOR"] = "celery" if workers else "in_process"
            os.environ["TRADING_ASSETS_CELERY_BROKER"] = BROKER
            started = _workers(workers, Path(home)) if workers else []
            try:
                wall, per_asset = run_emas(Settings.from_env(), day, day, job=REFRESH_MARKET_JOB)
            finally:
                for worker in started:
                    worker.terminate()
                    worker.wait()
            if name.endswith("(warm-up)"):
                continue
            inside, steps = sum(metadata["seconds"] for metadata in per_asset.values()), len(per_asset)
            print(f"  {name:<22} {wall:>8.2f} {inside:>12.2f} {steps:>6} {(wall - inside) / steps:>16.3f}")
        os.environ["TRADING_ASSETS_EXECUTOR"] = "in_process"
