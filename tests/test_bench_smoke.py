"""Smoke test of the in-process benchmark: it runs, its rows are complete, the product is right.

`bench_inprocess` reveals the benchmarked product and checks it against numpy (one truncation:
floor(X*Y / 2^16) or one less on the encodings) and raises `BenchmarkError` if it is wrong, so a
clean return means the measured computation was correct. No Ray here (see test_ray_runtime.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc.bench import BenchmarkError, bench_data, bench_inprocess, check_product
from mpc.protocols.registry import available_protocols

ROW_KEYS = {
    "protocol",
    "n",
    "size",
    "seconds",
    "elements_per_s",
    "baseline_elements_per_s",
    "ratio",
    "ratio_percent",
    "rounds_per_mul",
    "bytes_per_party_per_mul",
    "online_seconds",
    "online_elements_per_s",
    "online_ratio_percent",
    "best_seconds",
    "best_ratio_percent",
    "verified",
}


def test_bench_inprocess_smoke() -> None:
    rows = bench_inprocess(sizes=(100,), parties=(3,), repeats=1, verbose=False)
    expected = set()
    for name, cls in available_protocols().items():
        try:
            cls.check_parties(3, None)
        except ValueError:
            continue
        expected.add(name)
    assert {r["protocol"] for r in rows} == expected
    for row in rows:
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert row["n"] == 3 and row["size"] == 100 and row["verified"] is True
        assert row["ratio"] > 0 and row["ratio_percent"] > 0
        assert row["seconds"] > 0 and row["online_seconds"] > 0
        assert row["best_seconds"] <= row["online_seconds"]  # the best repetition, the median
        assert len(row["total_times"]) == len(row["online_times"]) == 1
        assert row["rounds_per_mul"] == 2  # protocol product + truncation
        assert row["bytes_per_party_per_mul"] > 0
    # the correctness check itself rejects a wrong product
    x, y = bench_data(50)
    z = np.floor(x * y * 2**16) / 2**16
    assert check_product(x, y, z) <= 2
    z[7] += 2**-10
    with pytest.raises(BenchmarkError):
        check_product(x, y, z)
