"""Learning-rate schedules as pure functions of the fractional epoch.

The learning rate is recomputed every step from (epoch + step / steps_per_epoch), so a resumed
run needs no scheduler state beyond the epoch counter.
"""

from __future__ import annotations

import bisect
import math

from ..config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, progress: float, total_epochs: int) -> float:
    """Multiplier of the base learning rate at ``progress`` epochs (a float) into the run."""
    warm = cfg.warmup_epochs
    if cfg.name == "onecycle":
        warm = warm or 0.3 * total_epochs
        if progress < warm:
            return progress / warm
        return max(0.0, (total_epochs - progress) / max(total_epochs - warm, 1e-12))
    ramp = min(1.0, progress / warm) if warm > 0 else 1.0
    if cfg.name == "piecewise":
        return ramp * cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), progress)
    return ramp * 0.5 * (1.0 + math.cos(math.pi * min(progress / total_epochs, 1.0)))
