"""ES-MAML's navigation tasks (Song et al., ICLR 2020): :data:`NAVIGATION` and :data:`FOUR_CORNERS`.

A point in the plane must reach a goal it cannot see (:mod:`warpgrad.tasks.rl.navigation`): dense
rewards on ``navigation`` (goals in [−1, 1]²), sparse ones on ``four-corners`` (a goal at one of
the corners (±2, ±2), invisible from the start). Each method meta-learns a policy initialisation
θ for its own adaptation operator, spending at most the profile's ``query_budget`` rollouts
(queries) on meta-training:

- ``es-maml``: zero-order ES-MAML with the ES-gradient adaptation;
- ``es-maml-hc``: zero-order ES-MAML with hill-climbing adaptation;
- ``maml-sim`` and ``fomaml-sim``: (first-order) MAML with exact gradients through the simulator
  (:mod:`warpgrad.methods.rollout_maml`); named apart from the registered ``maml`` and ``fomaml``
  (which adapt networks on supervised tasks), so ``--set maml-sim.lr=…`` reaches these.

The reported number is the mean post-adaptation return on ``test_tasks`` held-out goals (drawn
from a generator no training draw uses), each adapted from θ with the method's own operator, with
a Student's t interval over the goals; ``extra`` holds the return before adaptation and the
queries. ``history`` has one row per evaluation, ``step`` = meta-training queries so far, so the
curves (``curves.png``) compare methods at equal queries. The meta-learned state is kept in
``METHOD/state.pt`` (``torch.load``; ``theta`` is the initialisation).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from warpgrad.experiments.base import MethodSpec, Profile, TrialExperiment, _with

TEST_SEED = 1_000_003  # test goals: torch.Generator seeded with TEST_SEED + seed (no training draw uses it)
EVAL_SEED = 2_000_003  # the adaptation noise of every evaluation of a run: EVAL_SEED + seed


class BudgetTrial:
    """One method's meta-training to the query budget, evaluated on held-out goals as it goes."""

    def __init__(self, make_family: Callable[[], Any], make_learner: Callable[[Any, Any], Any], profile: Profile):
        self.make_family, self.make_learner, self.profile = make_family, make_learner, profile

    def run(self, seed: int, method_dir: Path, progress: bool) -> dict[str, Any]:
        from warpgrad.data.cache import save_tensors
        from warpgrad.engine.results import mean_ci95  # the engine imports the experiments

        o = self.profile.options
        family = self.make_family()
        generator = torch.Generator().manual_seed(seed)
        learner = self.make_learner(family, family.init_params(generator))
        steps = o["query_budget"] // learner.config.queries_per_step
        test_generator = torch.Generator().manual_seed(TEST_SEED + seed)
        tests = [family.sample(test_generator) for _ in range(self.profile.test_tasks)]
        marks = sorted({round(k * steps / o["eval_points"]) for k in range(o["eval_points"] + 1)})
        history: list[dict[str, Any]] = []
        started = time.perf_counter()

        def evaluate() -> dict[str, Any]:
            result = learner.evaluate(tests, torch.Generator().manual_seed(EVAL_SEED + seed))
            row = {"step": learner.queries, "meta_step": learner.step}
            history.append({**row, "post_return": result["post_return"], "pre_return": result["pre_return"]})
            return result

        result = evaluate() if marks[0] == 0 else None
        for step in tqdm(range(1, steps + 1), desc=f"{family.__class__.__name__}", unit="step", disable=not progress):
            learner.meta_step(generator)
            if step in marks:
                result = evaluate()
        if result is None:
            result = evaluate()
        wall_time = time.perf_counter() - started
        save_tensors(method_dir / "state.pt", learner.state_dict())
        mean, ci95 = mean_ci95(result["post"])
        pre_mean, pre_ci95 = mean_ci95(result["pre"])
        return {
            "metric": "post_return",
            "lower_is_better": False,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": len(tests),
            "steps": learner.step,
            "wall_time_s": round(wall_time, 3),
            "per_task": result["post"],
            "extra": {
                "pre_return": {"mean": pre_mean, "ci95": pre_ci95, "per_task": result["pre"]},
                "meta_training_queries": learner.queries,
                "queries_per_meta_step": learner.config.queries_per_step,
                "adaptation_queries_per_task": learner.adaptation.queries,
            },
            "history": history,
        }


def _es_maml(profile: Profile, method: str) -> BudgetTrial:
    from warpgrad.methods.es_maml import ESMAML, ESMAMLConfig

    config = ESMAMLConfig(**profile.options[method])
    return BudgetTrial(_family(profile), lambda family, theta: ESMAML(family, theta, config), profile)


def _maml(profile: Profile, method: str) -> BudgetTrial:
    from warpgrad.methods.rollout_maml import RolloutMAML, RolloutMAMLConfig

    config = RolloutMAMLConfig(**profile.options[method])
    return BudgetTrial(_family(profile), lambda family, theta: RolloutMAML(family, theta, config), profile)


def _family(profile: Profile) -> Callable[[], Any]:
    from warpgrad.tasks.rl.navigation import FourCorners, Navigation2D

    o = profile.options
    family = {"navigation": Navigation2D, "four-corners": FourCorners}[o["family"]]
    return lambda: family(horizon=o["horizon"], hidden=o["hidden"] or None)


_METHODS = {
    "es-maml": MethodSpec(
        "zero-order ES-MAML, ES-gradient adaptation (Song et al. 2020)", lambda p: _es_maml(p, "es-maml")
    ),
    "es-maml-hc": MethodSpec(
        "zero-order ES-MAML, hill-climbing adaptation (Song et al. 2020)", lambda p: _es_maml(p, "es-maml-hc")
    ),
    "maml-sim": MethodSpec(
        "MAML, exact gradients through the simulator (Finn et al. 2017)", lambda p: _maml(p, "maml-sim")
    ),
    "fomaml-sim": MethodSpec(
        "first-order MAML, exact gradients through the simulator", lambda p: _maml(p, "fomaml-sim")
    ),
}

# ES-MAML's released settings (σ 0.1, η 0.01, 150 pairs, one task per step, ES-gradient K = 20
# pairs at σ_a 0.1, α 0.05); MAML's inner step α on the raw return (its scale is ~100× the
# rewards') was chosen on validation goals at the zero policy.
_PAPER_METHODS: dict[str, dict[str, Any]] = {
    "es-maml": {"population": 150, "adaptation": "es-gradient", "adaptation_queries": 20},
    "es-maml-hc": {"population": 150, "adaptation": "hill-climbing", "adaptation_queries": 20},
    "maml-sim": {"lr": 1e-5, "meta_lr": 1e-3, "task_batch": 20},
    "fomaml-sim": {"lr": 1e-5, "meta_lr": 1e-3, "task_batch": 20, "first_order": True},
}
_QUICK_METHODS: dict[str, dict[str, Any]] = {
    "es-maml": {"population": 10, "adaptation": "es-gradient", "adaptation_queries": 5},
    "es-maml-hc": {"population": 10, "adaptation": "hill-climbing", "adaptation_queries": 10},
    "maml-sim": {"lr": 2e-5, "meta_lr": 1e-3, "task_batch": 10},
    "fomaml-sim": {"lr": 2e-5, "meta_lr": 1e-3, "task_batch": 10, "first_order": True},
}
_SMOKE_METHODS: dict[str, dict[str, Any]] = {
    "es-maml": {"population": 2, "adaptation": "es-gradient", "adaptation_queries": 2},
    "es-maml-hc": {"population": 2, "adaptation": "hill-climbing", "adaptation_queries": 2},
    "maml-sim": {"lr": 1e-4, "meta_lr": 1e-2, "task_batch": 2},
    "fomaml-sim": {"lr": 1e-4, "meta_lr": 1e-2, "task_batch": 2, "first_order": True},
}


def _profiles(family: str) -> dict[str, Profile]:
    def profile(name: str, description: str, methods: dict, **options: Any) -> Profile:
        schedule = {"meta_steps": 0, "meta_batch": 1, "eval_every": 1, "val_tasks": 0, "checkpoint_every": 1}
        return Profile(
            name,
            description,
            **schedule,
            test_tasks=options.pop("test_tasks"),
            options=_with({"family": family, "threads": 1, **options}, **methods),
        )

    return {
        "smoke": profile(
            "smoke",
            "seconds: horizon 10, budgets of 80 queries, 4 test goals (tests)",
            _SMOKE_METHODS,
            horizon=10,
            hidden=0,
            query_budget=80,
            eval_points=2,
            test_tasks=4,
        ),
        "quick": profile(
            "quick",
            "minutes on one CPU core: horizon 50, linear policies, 20,000 meta-training queries per method, "
            "50 test goals",
            _QUICK_METHODS,
            horizon=50,
            hidden=0,
            query_budget=20_000,
            eval_points=10,
            test_tasks=50,
        ),
        "paper": profile(
            "paper",
            "ES-MAML's settings: horizon 100, ES-MAML's released hyperparameters, 2,000,000 queries per method, "
            "100 test goals (hours)",
            _PAPER_METHODS,
            horizon=100,
            hidden=0,
            query_budget=2_000_000,
            eval_points=20,
            test_tasks=100,
        ),
    }


def _experiment(name: str, description: str) -> TrialExperiment:
    return TrialExperiment(
        name,
        description,
        _profiles(name),
        make_family=lambda p: None,  # type: ignore[arg-type,return-value]
        methods=_METHODS,
        curve=("post_return", "meta-training queries (rollouts)", "post-adaptation return (test goals)", False),
    )


NAVIGATION = _experiment(
    "navigation",
    "ES-MAML's 2-D navigation: dense reward, goals in [-1, 1]²; post-adaptation return on held-out goals "
    "at equal meta-training queries.",
)
FOUR_CORNERS = _experiment(
    "four-corners",
    "ES-MAML's four-corner task: sparse reward, a goal at one of (±2, ±2); post-adaptation return on "
    "held-out goals at equal meta-training queries.",
)
