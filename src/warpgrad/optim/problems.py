"""Small training problems to meta-train the learned optimiser on, and its meta-training with PES.

A problem is pure functional code: ``init(generator) -> params`` (a dict of tensors),
``sample_batch(generator) -> batch`` and ``loss(params, batch) -> scalar``. A problem *family* is
a callable ``generator -> problem`` (a problem class itself, or a ``functools.partial`` of one):
meta-training draws a fresh problem from it for every horizon, as Metz et al. (2019, 2020) train
on a distribution of tasks rather than one.

- :class:`QuadraticProblem`: ½(x − x* − b)ᵀ A (x − x* − b) with A = Q diag(λ) Qᵀ, Q a random
  rotation and λ log-spaced from 1 down to 1/``condition``; the batch b ~ N(0, noise²I) makes
  the gradients stochastic.
- :class:`MLPProblem`: a two-layer ReLU MLP fitting a random linear teacher, regression (mean
  squared error, targets with N(0, 0.1²) noise) or classification (cross-entropy on the argmax
  of the teacher's outputs).

The inner unroll. :func:`init_inner_state` starts a run of T updates on a problem;
:func:`inner_step` makes one: the loss and gradient at the current parameters on the batch of
step t, then :func:`~warpgrad.optim.learned.learned_update` on every tensor. The state is
{"params", "opt" (the moments per tensor), "t", "total_steps", "seed"}; the batch of step t is
drawn from a generator seeded with seed + t, so the step is a pure function of its inputs and
every PES particle of a horizon sees the same batches. :class:`LearnedOptimizer` on the same
problem and batches makes the same updates.

:func:`meta_train` descends the mean training loss over the unroll in the meta-parameters with
PES (Vicol, Metz & Sohl-Dickstein 2021) gradient estimates and Adam (Kingma & Ba 2015).

References:
    Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein. Understanding and correcting
    pathologies in the training of learned optimizers. ICML 2019.
    Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein. Tasks, stability, architecture, and
    compute: Training more effective learned optimizers, and using them to train themselves. 2020.
    Vicol, Metz, Sohl-Dickstein. Unbiased Gradient Estimation in Unrolled Computation Graphs with
    Persistent Evolution Strategies. ICML 2021.
    Kingma, Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from warpgrad.errors import TrainingDiverged, UsageError
from warpgrad.estimators import PES
from warpgrad.optim.learned import check_meta_params, init_feature_state, learned_update

__all__ = [
    "MLPProblem",
    "PESConfig",
    "Problem",
    "QuadraticProblem",
    "init_inner_state",
    "inner_batch",
    "inner_step",
    "meta_loss",
    "meta_train",
]

Params = dict[str, Tensor]


class Problem(Protocol):
    def init(self, generator: torch.Generator) -> Params: ...
    def sample_batch(self, generator: torch.Generator) -> Any: ...
    def loss(self, params: Params, batch: Any) -> Tensor: ...


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, name: str, minimum: float, inclusive: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (value == minimum and not inclusive):
        raise UsageError(f"{name} must be a finite number {'>=' if inclusive else '>'} {minimum}, got {value!r}")
    return float(value)


def _generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise UsageError(f"generator must be a torch.Generator (seeded by the caller), got {type(generator).__name__}")
    return generator


class QuadraticProblem:
    """A random ill-conditioned quadratic in ``dim`` variables, drawn from ``generator``."""

    def __init__(self, generator: torch.Generator, dim: int = 8, condition: float = 100.0, noise: float = 0.1):
        _generator(generator)
        self.dim = _count(dim, "dim")
        self.condition = _number(condition, "condition", 1.0)
        self.noise = _number(noise, "noise", 0.0)
        dtype = torch.get_default_dtype()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
        eigenvalues = torch.logspace(0, -math.log10(self.condition), dim, dtype=dtype)
        self.hessian = q @ torch.diag(eigenvalues) @ q.T
        self.target = torch.randn(dim, generator=generator, dtype=dtype)

    def init(self, generator: torch.Generator) -> Params:
        return {"x": torch.randn(self.dim, generator=generator, dtype=self.target.dtype)}

    def sample_batch(self, generator: torch.Generator) -> Tensor:
        return self.noise * torch.randn(self.dim, generator=generator, dtype=self.target.dtype)

    def loss(self, params: Params, batch: Tensor) -> Tensor:
        r = params["x"] - self.target - batch
        return 0.5 * r @ self.hessian @ r


class MLPProblem:
    """A two-layer ReLU MLP on a random linear-teacher task, drawn from ``generator``."""

    TASKS = ("regression", "classification")

    def __init__(
        self,
        generator: torch.Generator,
        inputs: int = 4,
        hidden: int = 8,
        outputs: int = 2,
        batch_size: int = 16,
        task: str = "regression",
    ):
        _generator(generator)
        self.inputs, self.hidden = _count(inputs, "inputs"), _count(hidden, "hidden")
        self.outputs, self.batch_size = _count(outputs, "outputs"), _count(batch_size, "batch_size")
        if task not in self.TASKS:
            raise UsageError(f"unknown task {task!r}; allowed: {', '.join(self.TASKS)}")
        if task == "classification" and outputs < 2:
            raise UsageError(f"classification needs outputs >= 2 classes, got {outputs!r}")
        self.task = task
        dtype = torch.get_default_dtype()
        self.teacher = torch.randn(inputs, outputs, generator=generator, dtype=dtype) / inputs**0.5

    def init(self, generator: torch.Generator) -> Params:
        dtype = self.teacher.dtype
        return {
            "w1": torch.randn(self.inputs, self.hidden, generator=generator, dtype=dtype) * (2 / self.inputs) ** 0.5,
            "b1": torch.zeros(self.hidden, dtype=dtype),
            "w2": torch.randn(self.hidden, self.outputs, generator=generator, dtype=dtype) / self.hidden**0.5,
            "b2": torch.zeros(self.outputs, dtype=dtype),
        }

    def sample_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn(self.batch_size, self.inputs, generator=generator, dtype=self.teacher.dtype)
        y = x @ self.teacher
        if self.task == "classification":
            return x, y.argmax(dim=1)
        return x, y + 0.1 * torch.randn(y.shape, generator=generator, dtype=y.dtype)

    def loss(self, params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        out = torch.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
        if self.task == "classification":
            return F.cross_entropy(out, y)
        return (out - y).pow(2).mean()


def init_inner_state(problem: Problem, generator: torch.Generator, total_steps: int) -> dict[str, Any]:
    """The start of a run of ``total_steps`` learned updates on ``problem``: its initial
    parameters and a batch seed, drawn from ``generator``."""
    _generator(generator)
    params = problem.init(generator)
    return {
        "params": params,
        "opt": {k: init_feature_state(p) for k, p in params.items()},
        "t": 0,
        "total_steps": _count(total_steps, "total_steps"),
        "seed": int(torch.randint(0, 2**62, (), generator=generator)),
    }


def inner_batch(problem: Problem, seed: int, t: int) -> Any:
    """The batch of step ``t`` of the run with batch seed ``seed``."""
    return problem.sample_batch(torch.Generator().manual_seed(seed + t))


def inner_step(meta_params: Params, problem: Problem, state: dict[str, Any]) -> tuple[dict[str, Any], Tensor]:
    """One learned update of the problem's parameters: (the new state, the loss before the update)."""
    params = state["params"]
    batch = inner_batch(problem, state["seed"], state["t"])
    # torch.func.grad differentiates even under the torch.no_grad of PES.
    grads, loss = torch.func.grad_and_value(problem.loss)(params, batch)
    progress = state["t"] / state["total_steps"]
    new_params, new_opt = {}, {}
    for name, p in params.items():
        update, new_opt[name] = learned_update(meta_params, state["opt"][name], grads[name], p, progress)
        new_params[name] = p - update
    new_state = {**state, "params": new_params, "opt": new_opt, "t": state["t"] + 1}
    return new_state, loss.detach()


def meta_loss(
    problem_family: Callable[[torch.Generator], Problem],
    meta_params: Params,
    total_steps: int,
    generator: torch.Generator,
    problems: int = 4,
) -> float:
    """The meta-loss: the training loss averaged over the ``total_steps`` steps of a run with the
    unperturbed rule, and over ``problems`` problems drawn (with their runs) from ``generator``."""
    meta_params = check_meta_params(meta_params)
    _count(problems, "problems")
    total = 0.0
    with torch.no_grad():
        for _ in range(problems):
            problem = problem_family(generator)
            state = init_inner_state(problem, generator, total_steps)
            for _ in range(total_steps):
                state, loss = inner_step(meta_params, problem, state)
                total += float(loss)
    return total / (problems * total_steps)


@dataclass(frozen=True)
class PESConfig:
    """PES's settings (:class:`~warpgrad.estimators.PES`): σ, pairs n, truncation K, horizon T."""

    sigma: float = 0.05
    population: int = 8
    truncation: int = 10
    total_steps: int = 50


def meta_train(
    problem_family: Callable[[torch.Generator], Problem],
    meta_params: Params,
    iterations: int,
    pes_config: PESConfig | dict[str, Any],
    generator: torch.Generator,
    meta_lr: float,
) -> tuple[Params, list[dict[str, float]]]:
    """Meta-train the rule: each iteration, a PES estimate over the next K steps of the current
    horizon (a new problem from ``problem_family`` when a horizon starts), then an Adam step on
    the meta-parameters. Returns the trained meta-parameters (copies) and per iteration
    {"iteration", "horizon_step", "mean_loss" (PES particles' mean loss per step), "grad_norm"}."""
    theta = check_meta_params(meta_params)
    _count(iterations, "iterations")
    if isinstance(pes_config, dict):
        try:
            pes_config = PESConfig(**pes_config)
        except TypeError:
            raise UsageError(f"pes_config keys must be among {', '.join(asdict(PESConfig()))}") from None
    if not isinstance(pes_config, PESConfig):
        raise UsageError(f"pes_config must be a PESConfig or a dict, got {type(pes_config).__name__}")
    _generator(generator)
    _number(meta_lr, "meta_lr", 0.0, inclusive=False)

    def init_state() -> tuple[Problem, dict[str, Any]]:
        problem = problem_family(generator)
        return problem, init_inner_state(problem, generator, pes_config.total_steps)

    def step(state: tuple[Problem, dict[str, Any]], params: Params) -> tuple[Any, Tensor]:
        problem, inner = state
        inner, loss = inner_step(params, problem, inner)
        return (problem, inner), loss

    pes = PES(step, init_state, **asdict(pes_config))
    for p in theta.values():
        p.requires_grad_(True)
    adam = torch.optim.Adam(list(theta.values()), lr=meta_lr)
    history = []
    for iteration in range(iterations):
        estimate = pes.estimate({k: p.detach() for k, p in theta.items()}, generator)
        grad_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in estimate.grad.values()))
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(f"meta_train: a non-finite PES gradient at iteration {iteration}")
        for name, p in theta.items():
            p.grad = estimate.grad[name].to(p.dtype)
        adam.step()
        history.append(
            {
                "iteration": iteration,
                "horizon_step": pes.t,
                "mean_loss": estimate.mean_loss / estimate.steps,
                "grad_norm": grad_norm,
            }
        )
    return {k: p.detach().clone() for k, p in theta.items()}, history
