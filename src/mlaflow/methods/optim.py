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
    run out of batches) is not updated, its momentum does not move and its weight decay is not applied.

    How it runs (the numbers are those of the per-parameter formula, bit for bit on the CPU): the parameters
    that step with the same runs (one mask object of the step's `stepping`) form a group; the group's mask is
    read on the host once (one transfer per group and step, not per parameter), and where every run steps the
    group is updated with `torch._foreach_*` ops (one kernel per op for all its parameters on CUDA). Where only
    some runs step, each parameter's active slices are gathered, updated and scattered back. How many steps
    each run of each parameter has taken is kept on the host too (SGD's first step, Adam's bias correction)."""

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
                "buf2": torch.zeros_like(p) if self.kind == "adam" else None,
                "steps": torch.zeros(
                    n_runs, device=p.device
                ),  # per run, on the device (Adam's bias correction)
                "host_steps": [0] * n_runs,  # the same counts on the host
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
        groups: dict[int, tuple[torch.Tensor, list[int]]] = {}
        for i, p in enumerate(self.params):
            runs = active.get(p)
            if p.grad is not None and runs is not None:
                groups.setdefault(id(runs), (runs, []))[1].append(i)
        for runs, members in groups.values():
            flags = runs.tolist()  # the group's mask on the host: one transfer per group
            if not any(flags):
                continue
            increment = runs.float()
            for i in members:
                state = self.state[i]
                state["steps"] += increment
                state["host_steps"] = [t + on for t, on in zip(state["host_steps"], flags)]
            if all(flags):  # the common case: every run steps, the whole stacked tensors in place
                self._update_all(members)
            else:  # only the active runs' slices: gather, update, scatter back
                idx = runs.nonzero().flatten()
                for i in members:
                    self._update_slices(
                        i, idx, [t for t, on in zip(self.state[i]["host_steps"], flags) if on]
                    )

    def _update_slices(self, i: int, idx: torch.Tensor, host_steps: list[int]) -> None:
        """torch.optim.SGD / Adam (no amsgrad, no nesterov) on the runs `idx` of parameter i."""
        p, state = self.params[i], self.state[i]
        param, grad, buf = p[idx], p.grad[idx], state["buf"][idx]
        shape = (-1,) + (1,) * (p.dim() - 1)
        if self.weight_decay:
            grad = grad.add(param, alpha=self.weight_decay)
        if self.kind == "sgd":
            if not self.momentum:
                param.sub_(grad, alpha=self.lr)
            elif 1 in host_steps:  # torch's SGD starts the momentum buffer at the gradient
                first = torch.tensor([t == 1 for t in host_steps], device=p.device).view(shape)
                buf.copy_(torch.where(first, grad, buf * self.momentum + grad))
                param.sub_(buf, alpha=self.lr)
            else:
                buf.mul_(self.momentum).add_(grad)
                param.sub_(buf, alpha=self.lr)
            p[idx], state["buf"][idx] = param, buf
            return
        buf2, t = state["buf2"][idx], state["steps"][idx].view(shape)
        b1, b2 = self.betas
        buf.mul_(b1).add_(grad, alpha=1 - b1)
        buf2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        param.sub_((self.lr / (1 - b1**t)) * buf / ((buf2 / (1 - b2**t)).sqrt() + self.eps))
        p[idx], state["buf"][idx], state["buf2"][idx] = param, buf, buf2

    def _update_all(self, members: list[int]) -> None:
        """The update of parameters `members` where every run steps, with one foreach op per step of the formula
        (the same elementwise operations as `_update_slices`, in the same order)."""
        params = [self.params[i] for i in members]
        states = [self.state[i] for i in members]
        grads = [p.grad for p in params]
        bufs = [s["buf"] for s in states]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.kind == "sgd":
            if not self.momentum:
                torch._foreach_sub_(params, grads, alpha=self.lr)
                return
            first = [k for k, s in enumerate(states) if 1 in s["host_steps"]]
            for k in first:  # torch's SGD starts the momentum buffer at the gradient (a run's first step)
                shape = (-1,) + (1,) * (params[k].dim() - 1)
                at_first = torch.tensor([t == 1 for t in states[k]["host_steps"]], device=params[k].device)
                bufs[k].copy_(torch.where(at_first.view(shape), grads[k], bufs[k] * self.momentum + grads[k]))
            later = [k for k in range(len(params)) if k not in first]
            if later:
                torch._foreach_mul_([bufs[k] for k in later], self.momentum)
                torch._foreach_add_([bufs[k] for k in later], [grads[k] for k in later])
            torch._foreach_sub_(params, bufs, alpha=self.lr)
            return
        b1, b2 = self.betas
        buf2s = [s["buf2"] for s in states]
        torch._foreach_mul_(bufs, b1)
        torch._foreach_add_(bufs, grads, alpha=1 - b1)
        torch._foreach_mul_(buf2s, b2)
        torch._foreach_addcmul_(buf2s, grads, grads, value=1 - b2)
        # the bias corrections, computed once per distinct history of steps (parameters that always step
        # together share one) and shape, as the per-parameter formula computes them
        corrections: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        for s, p in zip(states, params):
            key = (tuple(s["host_steps"]), p.dim())
            if key not in corrections:
                t = s["steps"].view((-1,) + (1,) * (p.dim() - 1))
                corrections[key] = (self.lr / (1 - b1**t), 1 - b2**t)
        step_size, bc2 = zip(*(corrections[tuple(s["host_steps"]), p.dim()] for s, p in zip(states, params)))
        denom = torch._foreach_div(buf2s, list(bc2))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_mul(list(step_size), bufs)
        torch._foreach_div_(update, denom)
        torch._foreach_sub_(params, update)

    def set_lr(self, lr: float) -> None:
        self.lr = lr
