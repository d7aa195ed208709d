"""Runs of equal keys in sorted rows: the groups the compiled kernels walk."""

import numpy as np
import polars as pl


def group_starts(keys: pl.DataFrame) -> np.ndarray:
    """Start offsets of the runs of equal keys in `keys` (sorted), with the end as the last element (no rows:
    no runs)."""
    if keys.is_empty():
        return np.zeros(1, np.int64)
    runs = keys.select(pl.struct(keys.columns).rle_id())[:, 0].to_numpy()
    changes = np.flatnonzero(np.diff(runs)) + 1
    return np.concatenate([[0], changes, [runs.size]]).astype(np.int64)
