"""AdamW for the heads on cached features, without torch.optim's import cost.

The first ``torch.optim`` optimizer built in a process imports ``torch._dynamo`` (its methods are
wrapped to keep the compiler out), which took 1.0 s on these 2 cores: about a fifteenth of a warm
train, whose heads train in a few seconds. This is the same update as ``torch.optim.AdamW`` with its
defaults (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; no amsgrad), checked
against it in the tests.
"""

from __future__ import annotations

import math

import torch


class AdamW:
    """Adam with decoupled weight decay over ``params``: ``zero_grad`` and ``step``, as torch's."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamW settings: lr {lr}, betas {betas}, eps {eps}, weight_decay {weight_decay}")
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = self.lr / (1 - beta1**self.steps)
        root_correction = math.sqrt(1 - beta2**self.steps)
        for p, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            grad = p.grad
            p.mul_(1 - self.lr * self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = (exp_avg_sq.sqrt() / root_correction).add_(self.eps)
            p.addcdiv_(exp_avg, denominator, value=-step_size)
