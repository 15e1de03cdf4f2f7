"""The optimiser and the learning-rate schedule of every training in mlaflow (the main loop and teacher phases).

`StackedOptimizer` updates R stacked runs at once (every parameter has a leading run axis, see
`mlaflow.methods.base`), each run only at the steps it really takes, with exactly torch.optim.SGD's or
torch.optim.Adam's update for that run alone. `StepDecay` is the paper's step schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OPTIMIZER_KEYS = ("optimizer", "lr", "momentum", "weight_decay")


@dataclass(frozen=True)
class StepDecay:
    """lr * gamma ** (epoch // step_epochs): train.lr, train.lr_gamma, train.lr_step_epochs."""

    lr: float
    gamma: float
    step_epochs: int

    @classmethod
    def from_train(cls, train_cfg: dict) -> StepDecay:
        return cls(train_cfg["lr"], train_cfg["lr_gamma"], train_cfg["lr_step_epochs"])

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_epochs)


class StackedOptimizer:
    """SGD (momentum, weight decay) or Adam over stacked parameters, stepping each run only when it is active.

    The update of run r is exactly torch.optim.SGD's / torch.optim.Adam's for that run alone: a parameter that
    gets no gradient in a run's step (an encoder whose modality is not trained at that step, a run that has
    run out of batches) is not updated, its momentum does not move and its weight decay is not applied."""

    def __init__(self, params: list[nn.Parameter], train_cfg: dict, n_runs: int):
        self.params = list(params)
        self.kind = train_cfg["optimizer"]
        self.lr, self.momentum, self.weight_decay = (
            train_cfg["lr"],
            train_cfg["momentum"],
            train_cfg["weight_decay"],
        )
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.n_runs = n_runs
        self.state = [
            {
                "buf": torch.zeros_like(p),
                "buf2": torch.zeros_like(p),
                "steps": torch.zeros(n_runs, device=p.device),
            }
            for p in self.params
        ]

    def settings(self) -> dict:
        """The settings (optimizer, current lr, momentum, weight decay) to build another optimiser like it."""
        return {
            "optimizer": self.kind,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
        }

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: dict[nn.Parameter, torch.Tensor]) -> None:
        for p, state in zip(self.params, self.state):
            runs = active.get(p)
            if p.grad is None or runs is None or not bool(runs.any()):
                continue
            state["steps"] += runs.float()
            if bool(runs.all()):  # the common case: update the whole stacked tensor in place
                self._update(p, p.grad, state["buf"], state["buf2"], state["steps"], slice(None))
            else:  # only the active runs' slices: gather, update, scatter back
                idx = runs.nonzero().flatten()
                param, buf, buf2 = p[idx], state["buf"][idx], state["buf2"][idx]
                self._update(param, p.grad[idx], buf, buf2, state["steps"], idx)
                p[idx], state["buf"][idx], state["buf2"][idx] = param, buf, buf2

    def _update(self, p, grad, buf, buf2, steps, runs) -> None:
        """torch.optim.SGD / Adam (no amsgrad, no nesterov) on the given runs' slices, in place."""
        shape = (-1,) + (1,) * (p.dim() - 1)
        if self.weight_decay:
            grad = grad.add(p, alpha=self.weight_decay)
        t = steps[runs].view(shape)
        if self.kind == "sgd":
            if not self.momentum:
                p.sub_(grad, alpha=self.lr)
                return
            first = t == 1  # torch's SGD starts the momentum buffer at the gradient
            if bool(first.any()):
                buf.copy_(torch.where(first, grad, buf * self.momentum + grad))
            else:
                buf.mul_(self.momentum).add_(grad)
            p.sub_(buf, alpha=self.lr)
        else:
            b1, b2 = self.betas
            buf.mul_(b1).add_(grad, alpha=1 - b1)
            buf2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            p.sub_((self.lr / (1 - b1**t)) * buf / ((buf2 / (1 - b2**t)).sqrt() + self.eps))

    def set_lr(self, lr: float) -> None:
        self.lr = lr
