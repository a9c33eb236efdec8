"""The papers' settings for the sine experiments' ``paper`` profiles: MAML's few-shot sine
regression (Finn et al., ICML 2017, §5.1; github.com/cbfinn/maml) and WarpGrad's continual sine
(Flennerhag et al., ICLR 2020, Algorithm 3, as summarised in ``METHODS.md``)."""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_BASELINES = ("maml", "fomaml", "metasgd", "tnets", "reptile", "leap", "finetune")
_README = "cbfinn/maml main.py usage docstring (10-shot sinusoid command)"
_MAIN = "cbfinn/maml main.py"

SINE = PaperRecord(
    "sine",
    "MAML's sine regression (Finn et al. 2017, §5.1) and cbfinn/maml",
    (
        PaperSetting(
            "task distribution",
            "A ~ U[0.1, 5], b ~ U[0, π], x ~ U[−5, 5]",
            "paper",
            "MAML §5.1",
            profile="A ~ U[0.1, 5], b ~ U[0, π], x ~ U[−5, 5] (warpgrad.tasks.sine)",
        ),
        PaperSetting("shots (K)", 10, "code", f"{_README}: --update_batch_size=10; MAML §5.1 (K = 10)", ("shots",)),
        PaperSetting(
            "network (hidden layers, ReLU)",
            (40, 40),
            "paper",
            "MAML §5.1 (2 hidden layers of size 40 with ReLU); cbfinn/maml maml.py (dim_hidden [40, 40])",
            ("hidden",),
        ),
        PaperSetting(
            "warp layers",
            None,
            "ours",
            "MAML has none",
            ("warp",),
        ),
        PaperSetting("inner optimiser", "sgd", "paper", "MAML Algorithm 2", ("inner_optimizer",)),
        PaperSetting(
            "inner learning rate",
            0.01,
            "paper",
            f"MAML §5.1 (fixed step size α = 0.01); the {_README} leaves --update_lr at its default 1e-3",
            ("inner_lr",),
        ),
        PaperSetting(
            "inner steps",
            1,
            "paper",
            f"MAML §5.1 (one gradient update); {_MAIN} (--num_updates default 1; evaluation runs 10 steps)",
            ("inner_steps",),
            deviation="5 steps for every method: WarpGrad's meta-objective needs points along a trajectory",
        ),
        PaperSetting(
            "tasks per meta-batch",
            25,
            "code",
            f"{_MAIN} (--meta_batch_size default 25; the sinusoid command keeps it)",
            ("meta_batch",),
        ),
        PaperSetting("meta-steps", 70_000, "code", f"{_README}: --metatrain_iterations=70000", ("meta_steps",)),
        PaperSetting(
            "meta-optimiser (MAML's; every method here)",
            "adam",
            "paper",
            "MAML §5.1 (Adam as the meta-optimiser, the baselines likewise)",
            ("warpgrad.meta_optimizer", *(f"{m}.meta_optimizer" for m in _BASELINES)),
        ),
        PaperSetting(
            "meta learning rate",
            1e-3,
            "code",
            f"{_MAIN} (--meta_lr default 0.001; the sinusoid command keeps it)",
            ("warpgrad.warp_lr", "warpgrad.init_lr", *(f"{m}.meta_lr" for m in _BASELINES)),
            deviation="per method, the best of {1e-3, 3e-3, 1e-2, 3e-2} on validation tasks (see above)",
        ),
        PaperSetting(
            "test tasks",
            600,
            "code",
            f"{_MAIN} (NUM_TEST_POINTS = 600, used by test() for the sinusoid too)",
            ("test_tasks",),
        ),
        PaperSetting("held-out points per task", None, "ours", "MAML plots curves over x", ("test_points",)),
        PaperSetting(
            "WarpGrad settings",
            None,
            "ours",
            "WarpGrad has no sine experiment",
            (
                "warpgrad.objective",
                "warpgrad.algorithm",
                "warpgrad.init",
                "warpgrad.meta_loss_data",
                "warpgrad.buffer_size",
                "warpgrad.warp_batch",
            ),
        ),
        PaperSetting("validation", None, "ours", "not part of the protocol", ("eval_every", "val_tasks")),
    ),
)

_ALG3 = "WarpGrad Algorithm 3 / appendix, as summarised in METHODS.md"

SINE_CONTINUAL = PaperRecord(
    "sine-continual",
    "WarpGrad's continual sine (Flennerhag et al. 2020, Algorithm 3)",
    (
        PaperSetting("sub-intervals of [−5, 5] learned in sequence", 5, "paper", _ALG3, ("intervals",)),
        PaperSetting(
            "targets",
            "random sinusoids (a mixture? METHODS.md: *verify*)",
            "unverified",
            _ALG3,
            profile="one sinusoid per sequence (warpgrad.tasks.continual)",
        ),
        PaperSetting(
            "network",
            "MLP with warp layers",
            "paper",
            _ALG3,
            profile="MLP 1-40-40-1, a linear warp after each hidden layer",
        ),
        PaperSetting("θ₀", "fixed (not meta-learned)", "paper", _ALG3, profile="fixed random initialisation"),
        PaperSetting(
            "warp meta-loss",
            "mean loss over the current and all previous sub-intervals",
            "paper",
            _ALG3,
            profile="mean loss over the current and all previous sub-intervals",
        ),
        PaperSetting("objective", "exact", "paper", "WarpGrad Eq. 11", ("warpgrad.objective",)),
        PaperSetting(
            "sizes, inner loop and schedule",
            None,
            "ours",
            "not re-read from the appendix",
            (
                "hidden",
                "points_per_interval",
                "test_points_per_interval",
                "inner_optimizer",
                "inner_lr",
                "steps_per_interval",
                "warpgrad.meta_optimizer",
                "warpgrad.warp_lr",
                "meta_steps",
                "meta_batch",
                "test_tasks",
                "val_tasks",
                "eval_every",
            ),
        ),
        PaperSetting("warp layers", None, "ours", "linear, identity-initialised", ("warp",)),
    ),
)

RECORDS = (SINE, SINE_CONTINUAL)
