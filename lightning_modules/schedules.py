"""Learning-rate schedules that papers state and torch has no class for (usable from YAML configs)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


class StepDivisorsLR(torch.optim.lr_scheduler.LambdaLR):
    """Divide the learning rate by ``divisors[i]`` at epoch ``milestones[i]``, cumulatively.

    MHHN: lr 1e-3 "divided by 2, 5, 10 and 10 at epochs 20, 50, 100 and 150" gives 5e-4, 1e-4, 1e-5, 1e-6.
    ``MultiStepLR`` has one factor for every milestone, so it cannot express this.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], divisors: Sequence[float],
                 last_epoch: int = -1) -> None:
        if len(milestones) != len(divisors) or list(milestones) != sorted(milestones):
            raise ValueError(f"need increasing milestones and one divisor each, got {milestones} and {divisors}")
        if any(d <= 0 for d in divisors):
            raise ValueError(f"divisors must be positive, got {divisors}")
        self.milestones, self.divisors = list(milestones), [float(d) for d in divisors]
        factors = [1.0]
        for d in self.divisors:
            factors.append(factors[-1] / d)
        self.factors = factors
        super().__init__(optimizer, self._factor, last_epoch)

    def _factor(self, epoch: int) -> float:
        return self.factors[bisect.bisect_right(self.milestones, epoch)]
