"""Schedule tests: the step LR and the consistency ramp-up at their milestones (docs/FIDELITY.md,
Schedules)."""
import math

import pytest

from utils.schedule import learning_rate, rampup_weight


@pytest.mark.parametrize('epoch,expected', [(0, 0.1), (150, 0.1), (151, 0.01), (224, 0.01),
                                            (225, 0.001), (299, 0.001)])
def test_learning_rate_script_schedule(epoch, expected):
    assert learning_rate(epoch, 0.1, [151, 225], 0.1) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('epoch,expected', [(0, 0.05), (9, 0.05), (10, 0.025), (19, 0.025),
                                            (20, 0.0125), (1000, 0.0125)])
def test_learning_rate_other_values(epoch, expected):
    assert learning_rate(epoch, 0.05, (10, 20), 0.5) == pytest.approx(expected, rel=1e-12)


def test_learning_rate_no_schedule_is_constant():
    assert [learning_rate(e, 0.1, [], 0.1) for e in (0, 100, 299)] == [0.1, 0.1, 0.1]


def test_learning_rate_is_a_function_of_the_epoch_only():
    """A resumed run must see the same LR as an uninterrupted one, in any call order."""
    forward = [learning_rate(e, 0.1, [151, 225], 0.1) for e in range(300)]
    backward = [learning_rate(e, 0.1, [151, 225], 0.1) for e in reversed(range(300))]
    assert forward == backward[::-1]


@pytest.mark.parametrize('epoch,rampup,expected', [
    (0, 80, math.exp(-5)), (-3, 80, math.exp(-5)), (40, 80, math.exp(-1.25)),
    (20, 80, math.exp(-5 * 0.75 ** 2)), (80, 80, 1.0), (81, 80, 1.0), (300, 80, 1.0),
    (0, 0, 1.0), (5, 0, 1.0), (0, 1, math.exp(-5)), (1, 1, 1.0),
])
def test_rampup_weight(epoch, rampup, expected):
    assert rampup_weight(epoch, rampup) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize('rampup', [1, 10, 80])
def test_rampup_weight_monotone(rampup):
    weights = [rampup_weight(e, rampup) for e in range(rampup + 20)]
    assert all(a < b for a, b in zip(weights[:rampup + 1], weights[1:rampup + 1]))
    assert all(0 < w <= 1 for w in weights)
    assert weights[rampup:] == [1.0] * 20
