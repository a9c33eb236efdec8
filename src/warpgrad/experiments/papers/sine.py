"""The papers' settings for the sine experiments' ``paper`` profiles: MAML's few-shot sine
regression (Finn et al., ICML 2017, §5.1; github.com/cbfinn/maml) and WarpGrad's continual sine
(Flennerhag et al., ICLR 2020, Algorithm 3, as summarised in ``METHODS.md``)."""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_BASELINES = ("maml", "fomaml", "metasgd", "tnets", "reptile", "leap", "finetune")
_README = "cbfinn/maml README (sinusoid command)"

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
        PaperSetting("shots (K)", 10, "code", f"{_README}: --update_batch_size=10", ("shots",)),
        PaperSetting("network (hidden layers, ReLU)", (40, 40), "unverified", "MAML §5.1 (from memory)", ("hidden",)),
        PaperSetting(
            "warp layers",
            None,
            "ours",
            "MAML has none",
            ("warp",),
        ),
        PaperSetting("inner optimiser", "sgd", "paper", "MAML Algorithm 2", ("inner_optimizer",)),
        PaperSetting("inner learning rate", 0.01, "unverified", "MAML §5.1 (α = 0.01; from memory)", ("inner_lr",)),
        PaperSetting(
            "inner steps",
            1,
            "unverified",
            "MAML §5.1 (one gradient update; from memory)",
            ("inner_steps",),
            deviation="5 steps for every method: WarpGrad's meta-objective needs points along a trajectory",
        ),
        PaperSetting(
            "tasks per meta-batch", 25, "unverified", "cbfinn/maml main.py --meta_batch_size default", ("meta_batch",)
        ),
        PaperSetting("meta-steps", 70_000, "code", f"{_README}: --metatrain_iterations=70000", ("meta_steps",)),
        PaperSetting(
            "meta-optimiser (MAML's; every method here)",
            "adam",
            "paper",
            "MAML §5.1",
            ("warpgrad.meta_optimizer", *(f"{m}.meta_optimizer" for m in _BASELINES)),
        ),
        PaperSetting(
            "meta learning rate",
            1e-3,
            "unverified",
            "cbfinn/maml main.py --meta_lr default (from memory)",
            ("warpgrad.warp_lr", "warpgrad.init_lr", *(f"{m}.meta_lr" for m in _BASELINES)),
            deviation="per method, the best of {1e-3, 3e-3, 1e-2, 3e-2} on validation tasks (see above)",
        ),
        PaperSetting(
            "test tasks", 600, "unverified", "cbfinn/maml main.py NUM_TEST_POINTS (from memory)", ("test_tasks",)
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
