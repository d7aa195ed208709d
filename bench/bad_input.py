"""A hostile price file: 200 MB of one row repeated, read as `load prices` reads it (and refused)."""

import tempfile
import time
from pathlib import Path

from bench.compute import peak_mib
from trading_assets.errors import InputError
from trading_assets.sources.price_files import read_price_file

_ROW = "2021-01-04,100.25,101.5,99.75,100.5,123456789\n"


def repeated_rows(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "repeated.csv"
        rows = megabytes * 1024 * 1024 // len(_ROW)
        with path.open("w") as handle:
            handle.write("date,open,high,low,close,volume\n")
            block = _ROW * 10_000
            for _ in range(rows // 10_000):
                handle.write(block)
        size = path.stat().st_size / 1024 / 1024
        started = time.perf_counter()
        try:
            read_price_file(path)
            outcome = "loaded"
        except InputError as exc:
            outcome = "refused: " + str(exc).split(": ", 1)[1][:70] + "..."
        seconds = time.perf_counter() - started
    print("\na price file of one row repeated (what `load prices` reads before any run)")
    print(f"{'file MB':>8} {'rows':>10} {'seconds':>8} {'peak MiB':>9}  outcome")
    print(f"{size:>8.0f} {rows:>10,} {seconds:>8.1f} {peak_mib():>9.0f}  {outcome}")
