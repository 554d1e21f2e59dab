"""The 245 Chinchilla points of Besiroglu et al. (2024) (see data/README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "chinchilla_fig4.csv"


def chinchilla_points(drop_highest: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss) with D = C / (6 N), leaving out the ``drop_highest`` highest losses, as
    Besiroglu et al. (2024, Sec. 3) do (240 points remain)."""
    with open(DATA, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["model_size"]) for r in rows])
    c = np.array([float(r["training_flop"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(loss, kind="stable")[: len(loss) - drop_highest]
    keep.sort()
    return n[keep], c[keep] / (6.0 * n[keep]), loss[keep]
