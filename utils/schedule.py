"""The learning rate and the consistency ramp-up, pure functions of the 0-based epoch index.

Both are computed afresh from the epoch, never carried as state, so a resumed run sees
exactly the values an uninterrupted run sees.
"""
import math


def learning_rate(epoch, base_lr, schedule, gamma):
    """Step schedule: the LR is multiplied by gamma once the epoch reaches each milestone."""
    return base_lr * gamma ** sum(epoch >= milestone for milestone in schedule)


def rampup_weight(epoch, rampup_epochs):
    """Sigmoid ramp-up of the distillation weight: exp(-5 (1 - t)^2), t = epoch / R in [0, 1]."""
    if rampup_epochs == 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0), rampup_epochs) / rampup_epochs
    return math.exp(-5.0 * phase * phase)
