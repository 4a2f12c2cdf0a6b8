"""Hand-made SuiteResults for the sanity-check and report tests (no model runs)."""

from __future__ import annotations

import numpy as np

from capjax.eval import suite


def with_accuracy(accuracy: float, n: int = 100) -> np.ndarray:
    """(n,) bool with round(accuracy * n) leading Trues."""
    return np.arange(n) < round(accuracy * n)


def fake_result(rows: dict, accuracy: dict, clean: dict | None = None, n: int = 100):
    """A SuiteResult of `rows` whose row k has accuracy[k] (first examples correct) and
    clean_correct `clean[k]` (default all True)."""
    parsed = suite.parse_rows(rows)
    clean = clean or {}
    results = {
        k: suite.RowResult(
            parsed[k],
            with_accuracy(accuracy[k], n),
            np.asarray(clean.get(k, np.ones(n, bool)), bool),
            seconds=1.5,
        )
        for k in rows
    }
    return suite.SuiteResult(results, n)
