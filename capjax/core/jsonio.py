"""JSON results: plain Python from trees holding numpy and jax values, written atomically."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np


def to_jsonable(tree: Any) -> Any:
    """Converts numpy/jax scalars and arrays in a (nested) dict or list to plain Python."""
    if isinstance(tree, dict):
        return {str(k): to_jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_jsonable(v) for v in tree]
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        value = np.asarray(tree)
        return value.item() if value.ndim == 0 else value.tolist()
    return tree


def write_json(path: str, payload: Any) -> None:
    """Writes JSON atomically (temp file + rename) so readers never see half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(to_jsonable(payload), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
