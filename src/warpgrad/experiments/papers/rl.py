"""The papers' settings for the reinforcement-learning experiments' ``paper`` profiles: WarpGrad's
maze (Flennerhag et al. 2020; reference code flennerhag/warpgrad ``src/maze_navigation/run.py``
and Miconi's backpropamine maze runs, read as summarised in ``METHODS-2.md`` §1) and ES-MAML's
navigation tasks (Song et al., ICLR 2020; google-research ``es_maml``, ``METHODS-2.md`` §5)."""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_RUN = "flennerhag/warpgrad src/maze_navigation/run.py (METHODS-2.md §1)"
_UBER = "uber-research/backpropamine maze runs (METHODS-2.md §1)"
_BASELINES = ("rnn", "hebbian", "backpropamine")


def _each(field: str, methods: tuple[str, ...] = _BASELINES) -> tuple[str, ...]:
    return tuple(f"{m}.{field}" for m in methods)


MAZE = PaperRecord(
    "maze",
    "WarpGrad's maze navigation (Flennerhag et al. 2020) and its baselines' runs (Miconi et al. 2019)",
    (
        PaperSetting("maze size (msize)", 13, "code", f"{_RUN}; {_UBER} (--msize 13)", ("size",)),
        PaperSetting("episode length", 200, "code", _RUN, ("episode_length",)),
        PaperSetting("mazes per batch", 30, "code", _RUN, ("meta_batch",)),
        PaperSetting("reward at the goal", 10.0, "code", _RUN, ("reward",)),
        PaperSetting("wall penalty", 0.0, "code", f"{_UBER} (wp 0; argparse's 0.05 was not run)", ("wall_penalty",)),
        PaperSetting("hidden units", 100, "code", _RUN, ("hidden_size",)),
        PaperSetting("discount γ", 0.9, "code", _RUN, ("a2c.gamma",)),
        PaperSetting("value-loss coefficient", 0.1, "code", _RUN, ("a2c.value_coef",)),
        PaperSetting(
            "policy regulariser: Σp² (not Shannon entropy) at",
            ("sum-p2", 0.03),
            "code",
            _RUN,
            ("a2c.regulariser", "a2c.regulariser_coef"),
        ),
        PaperSetting(
            "value baseline (`first-env`: batch element 0's value for every maze)",
            "first-env",
            "code",
            f"{_RUN}; {_UBER} (a shared bug)",
            ("a2c.value_baseline",),
            deviation="each maze's own value (`per-env`); `--set a2c.value_baseline=first-env` "
            "reproduces the reference",
        ),
        PaperSetting("warp-rnn: Adam lr for θ and φ", (1e-3, 1e-3), "code", _RUN, ("warp-rnn.lr", "warp-rnn.meta_lr")),
        PaperSetting("warp-rnn: Adam ε", 1e-8, "code", f"{_RUN} (torch's default)", ("warp-rnn.adam_eps",)),
        PaperSetting(
            "warp-rnn: gradient clipping", 0.0, "code", f"{_RUN} (--gc parsed but unused)", ("warp-rnn.clip",)
        ),
        PaperSetting("warp-rnn: φ step every (episodes, summed gradient)", 30, "code", _RUN, ("warp-rnn.meta_every",)),
        PaperSetting(
            "episodes before the first update", 101, "code", f"{_RUN}; {_UBER}", ("warp-rnn.burn_in", *_each("burn_in"))
        ),
        PaperSetting("baselines: Adam lr", 1e-4, "code", _UBER, _each("lr")),
        PaperSetting("baselines: Adam ε", 1e-4, "code", _UBER, _each("adam_eps")),
        PaperSetting("baselines: gradient-norm clip", 4.0, "code", _UBER, _each("clip")),
        PaperSetting(
            "episodes",
            200_000,
            "unverified",
            f"WarpGrad's figure (METHODS-2.md [M-medium]); {_UBER}: 200,002 iterations; flennerhag/warpgrad "
            "src/maze_navigation/run.py's --nbiter defaults to 1,000,000 (its README's command keeps it)",
            ("meta_steps",),
        ),
        PaperSetting(
            "seeds", 10, "code", f"{_RUN} README; {_UBER} (instances: 10)", profile="one per run: `--seeds 0-9`"
        ),
        PaperSetting(
            "metric",
            "reward per episode over training (curves, 10 seeds)",
            "code",
            "flennerhag/warpgrad src/maze_navigation/run.py (all_total_rewards: each episode's total reward, "
            "averaged over the batch of mazes, every 10th written out) and README (seeds 0–9)",
            profile="mean reward over the last `final_episodes` episodes, and the curve",
        ),
        PaperSetting(
            "curve points, final episodes",
            None,
            "ours",
            "the figure has no such setting",
            ("eval_every", "final_episodes"),
        ),
        PaperSetting("held-out tasks", None, "ours", "every episode is a new maze goal", ("val_tasks", "test_tasks")),
    ),
)

_ES = "google-research es_maml config.py (METHODS-2.md §5)"


def _navigation(experiment: str, task: PaperSetting, horizon: PaperSetting) -> PaperRecord:
    return PaperRecord(
        experiment,
        "ES-MAML (Song et al. 2020) and its released code",
        (
            task,
            horizon,
            PaperSetting("policy: hidden layers (0 = linear)", 0, "code", f"{_ES} (hidden_layers [])", ("hidden",)),
            PaperSetting("ES-MAML antithetic pairs", 150, "code", _ES, ("es-maml.population", "es-maml-hc.population")),
            PaperSetting(
                "ES-MAML σ, η, tasks per step",
                (0.1, 0.01, 1),
                "code",
                _ES,
                profile="ESMAMLConfig defaults: σ 0.1, η 0.01, 1 task",
            ),
            PaperSetting(
                "ES-MAML adaptation queries K",
                20,
                "code",
                _ES,
                ("es-maml.adaptation_queries", "es-maml-hc.adaptation_queries"),
            ),
            PaperSetting(
                "ES-gradient adaptation",
                "K = 20 one-sided Gaussian queries, σ_a 0.1, α 0.05",
                "code",
                _ES,
                profile="K = 20 antithetic pairs (2K queries), σ_a 0.1, α 0.05",
                deviation="antithetic pairs (the reference's z-scoring of one-sided samples supplies the baseline)",
            ),
            PaperSetting(
                "adaptation operators",
                ("es-gradient", "hill-climbing"),
                "code",
                _ES,
                ("es-maml.adaptation", "es-maml-hc.adaptation"),
            ),
            PaperSetting(
                "test tasks",
                50,
                "code",
                f"{_ES} (50 train / 50 test tasks)",
                ("test_tasks",),
                deviation="100 goals drawn from the task distribution (a tighter interval)",
            ),
            PaperSetting(
                "meta-training",
                "10,000 iterations",
                "code",
                _ES,
                ("query_budget",),
                deviation="a query budget, equal for every method (docs/meta-gradients.md)",
            ),
            PaperSetting(
                "MAML through the simulator",
                None,
                "ours",
                "the paper compares with PG-MAML (TRPO)",
                (
                    "maml-sim.lr",
                    "maml-sim.meta_lr",
                    "maml-sim.task_batch",
                    "fomaml-sim.lr",
                    "fomaml-sim.meta_lr",
                    "fomaml-sim.task_batch",
                    "fomaml-sim.first_order",
                ),
            ),
        ),
        notes={
            "family": "which task family",
            "eval_points": "curve points over the budget",
            "meta_steps": "unused: the budget decides",
            "meta_batch": "unused: each method's task batch",
            "eval_every": "unused",
            "val_tasks": "no validation",
        },
    )


NAVIGATION = _navigation(
    "navigation",
    PaperSetting(
        "task",
        "2-D point: goal U[−1, 1]², r = −‖p − g‖², actions clipped ±0.1",
        "code",
        "google-research es_maml task.py (METHODS-2.md §5)",
        profile="Navigation2D (warpgrad.tasks.rl)",
    ),
    PaperSetting("horizon", 100, "code", f"{_ES} (navigation)", ("horizon",)),
)
FOUR_CORNERS = _navigation(
    "four-corners",
    PaperSetting(
        "task",
        "goal one of (±2, ±2), r = −4 + max(0, 4 − d²), position clipped ±5",
        "code",
        "google-research es_maml task.py (METHODS-2.md §5)",
        profile="FourCorners (warpgrad.tasks.rl)",
    ),
    PaperSetting(
        "horizon",
        100,
        "code",
        "google-research es_maml config.py (horizon 100 for NavigationTask2d and NavigationTask4corner, 200 otherwise)",
        ("horizon",),
    ),
)

RECORDS = (MAZE, NAVIGATION, FOUR_CORNERS)
