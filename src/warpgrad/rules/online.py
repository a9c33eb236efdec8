"""Online gradient descent as a :class:`~warpgrad.rules.base.LearnedRule`: the hand-designed
baseline every learned rule is measured against (VS-ML's online SGD/Adam baselines).

A one-hidden-layer tanh MLP (or a linear classifier with ``hidden=0``), trained one example at a
time. At step t, in this order:

    1. the feedback (the label of x_{t−1}) arrives: one SGD or Adam step on the cross-entropy of
       the prediction for x_{t−1} (kept in the state), −Σ_c feedback_c · log softmax(f(x_{t−1}))_c;
    2. predict x_t with the updated network and keep x_t for the next step.

At t = 0 the feedback is zero, so is the loss and its gradient: no update. The learning rate is
the rule's only setting (tuned on meta-validation tasks by the experiment); it has no
meta-parameters, so ``init_meta`` returns an empty dict.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError

__all__ = ["OnlineGradient"]


class OnlineGradient:
    """Online SGD or Adam on a small MLP, in the learned-rule protocol."""

    vectorizable = True

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 0, optimizer: str = "sgd", lr: float = 0.1) -> None:
        if optimizer not in ("sgd", "adam"):
            raise UsageError(f"optimizer={optimizer!r}: allowed are 'sgd', 'adam'")
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise UsageError(f"lr={lr!r}: must be a positive number")
        self.name = f"online-{optimizer}"
        self.in_dim, self.n_classes, self.hidden = in_dim, n_classes, hidden
        self.optimizer, self.lr = optimizer, float(lr)

    def init_meta(self, generator: torch.Generator) -> Params:
        return {}

    def init_state(self, meta: Params, generator: torch.Generator) -> dict:
        sizes = [self.in_dim, self.hidden, self.n_classes] if self.hidden else [self.in_dim, self.n_classes]
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            bound = 1 / math.sqrt(fan_in)
            params[f"w{i}"] = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
            params[f"b{i}"] = torch.zeros(fan_out)
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return {
            "params": params,
            "m": zeros,
            "v": dict(zeros),
            "t": torch.zeros(()),
            "previous_x": torch.zeros(self.in_dim),
        }

    def forward(self, params: Params, x: Tensor) -> Tensor:
        layers = len(params) // 2
        for i in range(layers):
            x = params[f"w{i}"] @ x + params[f"b{i}"]
            if i < layers - 1:
                x = torch.tanh(x)
        return x

    def step(self, meta: Params, state: dict, x: Tensor, feedback: Tensor) -> tuple[dict, Tensor]:
        def loss(params: Params) -> Tensor:
            return -(feedback * torch.log_softmax(self.forward(params, state["previous_x"]), -1)).sum()

        grads = torch.func.grad(loss)(state["params"])
        params, m, v, t = state["params"], state["m"], state["v"], state["t"]
        if self.optimizer == "sgd":
            params = {k: p - self.lr * grads[k] for k, p in params.items()}
        else:  # Adam (Kingma & Ba 2015), counting only the steps that had feedback
            has_feedback = feedback.sum()
            t = t + has_feedback
            m = {k: torch.where(has_feedback > 0, 0.9 * m[k] + 0.1 * grads[k], m[k]) for k in params}
            v = {k: torch.where(has_feedback > 0, 0.999 * v[k] + 0.001 * grads[k] ** 2, v[k]) for k in params}
            t_safe = t.clamp(min=1)
            params = {
                k: p - self.lr * (m[k] / (1 - 0.9**t_safe)) / (torch.sqrt(v[k] / (1 - 0.999**t_safe)) + 1e-8)
                for k, p in params.items()
            }
        logits = self.forward(params, x)
        return {"params": params, "m": m, "v": v, "t": t, "previous_x": x}, logits
