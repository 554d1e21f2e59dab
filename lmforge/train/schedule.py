"""Learning-rate schedules, as pure functions of the step (so a resumed run agrees).

- ``cosine``: linear warmup, then cosine decay to ``min_lr_ratio x lr`` at the last step
  (Loshchilov & Hutter 2017, SGDR, Eq. 5 without restarts; as in GPT-3, Brown et al.
  2020, App. B, and Chinchilla, Hoffmann et al. 2022, Sec. 3);
- ``wsd``: warmup-stable-decay: linear warmup, constant, then a linear decay over the
  last ``decay_fraction`` of the steps (Hu et al. 2024, MiniCPM, Sec. 4);
- ``constant``: linear warmup, then constant.
"""

from __future__ import annotations

import math

from lmforge.errors import check_choice

SCHEDULES = ("cosine", "wsd", "constant")


def learning_rate(
    step: int,
    *,
    lr: float,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    check_choice("schedule", schedule, SCHEDULES)
    min_lr = lr * min_lr_ratio
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    last = max(total_steps - 1, warmup_steps)
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, last - warmup_steps))
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    decay_start = max(warmup_steps, round(total_steps * (1.0 - decay_fraction)))
    if step < decay_start:
        return lr
    progress = min(1.0, (step - decay_start) / max(1, last - decay_start))
    return lr - (lr - min_lr) * progress
