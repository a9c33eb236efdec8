"""The papers' settings for the learned-optimiser and learned-rule experiments' ``paper`` profiles:
FOP (Moskovitz et al. 2019), a PES-trained learned optimiser (Metz et al. 2019/2020; Vicol et al.
2021) and VS-ML / BLUR / Gregor-style local rules (``METHODS-2.md`` §2–4). These are CPU-sized
versions of the papers' protocols: the papers' scales (CIFAR-10/ImageNet, TPU-months, 128 nodes)
are recorded and every scaled-down setting is declared."""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_FOP = "FOP (arXiv 1910.08461), METHODS-2.md §2"
_FOP_METHODS = ("fop-sgd", "fop-momentum", "fop-adam")

FOP = PaperRecord(
    "fop",
    "FOP (Moskovitz et al. 2019): first-order preconditioning around SGD, momentum and Adam",
    (
        PaperSetting(
            "data",
            "CIFAR-10, ImageNet",
            "unverified",
            f"{_FOP} [M-low]",
            ("data",),
            deviation="Fashion-MNIST (or KanjiVG): CPU-sized, offline",
        ),
        PaperSetting(
            "network",
            "standard conv nets / ResNets",
            "unverified",
            f"{_FOP} [M-low]",
            profile="3 conv layers (`width`, 2·`width`, 2·`width`) and a dense head",
            deviation="a small convnet",
        ),
        PaperSetting(
            "base optimisers",
            "SGD, momentum, Adam",
            "paper",
            "FOP abstract",
            profile="`sgd`, `momentum`, `adam` and FOP around each",
        ),
        PaperSetting(
            "preconditioner",
            "one P per layer, conv: k²×k² spatial, shared over channels; P = MᵀM, M₀ = I",
            "unverified",
            f"{_FOP} [M-medium]",
            profile="`structure` = layer, `parameterization` = factored (P = MᵀM, M₀ = I)",
        ),
        PaperSetting(
            "structure / parameterisation",
            None,
            "ours",
            "our reading of the [M-medium] notes",
            tuple(f"{m}.{f}" for m in _FOP_METHODS for f in ("structure", "parameterization")),
        ),
        PaperSetting(
            "learning rates and hyper-learning rates",
            None,
            "ours",
            "not extracted from the paper; hyper_lr tuned on validation (results/fop-tuning)",
            ("sgd.lr", "momentum.lr", "adam.lr", *(f"{m}.{f}" for m in _FOP_METHODS for f in ("lr", "hyper_lr"))),
        ),
        PaperSetting("momentum", None, "ours", "the common value", ("momentum.momentum", "fop-momentum.momentum")),
        PaperSetting(
            "schedule",
            None,
            "ours",
            "5 epochs of Fashion-MNIST at batch 128",
            ("meta_steps", "meta_batch", "eval_every", "width", "runs"),
        ),
    ),
    notes={
        "kanji": "options for `data=kanji`",
        "train_size": "0: every training image",
        "test_size": "0: the whole test set",
        "validation": "false: evaluate on the test set",
        "val_tasks": "unused",
        "test_tasks": "unused",
    },
)

_METZ = "Metz et al. 2019/2020 (learned optimisers), Vicol et al. 2021 (PES)"

LEARNED_OPTIMIZER = PaperRecord(
    "learned-optimizer",
    "the learned-optimiser protocol of Metz et al. 2019/2020, meta-trained with PES (Vicol et al. 2021)",
    (
        PaperSetting(
            "meta-gradient estimator",
            "PES",
            "paper",
            "Vicol et al. 2021 (PES, proposed there for learned optimisers among others)",
            profile="PES with antithetic pairs (`meta_batch` pairs per iteration)",
        ),
        PaperSetting(
            "tasks, scale and rule",
            "task suites of many problem types; thousands of TPU-hours",
            "unverified",
            f"{_METZ} (abstracts; METHODS-2.md §8)",
            profile="MLP classifiers of digits/MNIST to meta-train, Fashion-MNIST and digits 6–9 held out; "
            "a per-parameter MLP rule",
            deviation="a CPU-sized distribution of small classifiers",
        ),
        PaperSetting(
            "baselines",
            "Adam, SGD with tuned learning rates",
            "unverified",
            f"{_METZ} (from memory)",
            profile="`adam`, `sgd` tuned on `val_tasks` problems of the training distribution",
        ),
        PaperSetting(
            "sizes and schedule",
            None,
            "ours",
            "no paper value at this scale",
            (
                "meta_steps",
                "meta_batch",
                "inner_steps",
                "examples",
                "dim",
                "batch_size",
                "train.hidden",
                "train.max_classes",
                "test.hidden",
                "test.max_classes",
                "test_tasks",
                "val_tasks",
                "eval_every",
            ),
        ),
        PaperSetting(
            "PES and rule settings",
            None,
            "ours",
            "chosen for the quick profile (docs/meta-gradients.md)",
            ("learned.meta_lr", "learned.sigma", "learned.truncation", "learned.rule_hidden"),
        ),
        PaperSetting(
            "baseline grids",
            None,
            "ours",
            "log grids around the usual rates",
            ("adam.lr_min", "adam.lr_max", "adam.grid", "sgd.lr_min", "sgd.lr_max", "sgd.grid"),
        ),
    ),
)

_VSML = "louiskirsch/vsml-neurips2021 configs (METHODS-2.md §3)"
_RULES = ("vsml", "blur", "local-rules")

LEARNED_RULES = PaperRecord(
    "learned-rules",
    "VS-ML's protocol (Kirsch & Schmidhuber 2021) at 8×8 inputs, with BLUR and Gregor-style rules",
    (
        PaperSetting(
            "meta-training data",
            "MNIST-like tfds datasets, random projections",
            "code",
            _VSML,
            profile="digits 0–4 of scikit-learn digits and the MNIST sample, 8×8, random projections",
            deviation="8×8 inputs, CPU-sized",
        ),
        PaperSetting(
            "random input projections",
            "on every other MPI worker: one fixed Glorot-uniform projection per worker, raw inputs on the rest",
            "code",
            "louiskirsch/vsml-neurips2021 configs/rand_proj.yaml (data.preprocess.rand_proj.mpi_split [False, "
            "True]; the README's Section 4.2 / Fig. 6 run, with configs/backprop.yaml for backpropagation), "
            "launch.py (_update_ranked_config: option by MPI rank), data.py (_preprocess: the projection drawn "
            "once); default.yaml: rand_proj False. Was recorded as True (from memory)",
            ("project",),
            deviation="every meta-training episode projected, with a new projection per episode",
        ),
        PaperSetting("episode length (meta-training, batch 1)", 500, "code", _VSML, ("train_length",)),
        PaperSetting(
            "meta-loss",
            "mean online cross-entropy over the episode",
            "code",
            _VSML,
            profile="mean online cross-entropy over the episode",
        ),
        PaperSetting(
            "meta-trainer (backprop config)",
            "bptt",
            "code",
            f"{_VSML} (configs/backprop.yaml)",
            tuple(f"{r}.trainer" for r in _RULES),
        ),
        PaperSetting(
            "Adam learning rate (backprop config)",
            1e-3,
            "code",
            f"{_VSML} (configs/backprop.yaml)",
            tuple(f"{r}.lr" for r in _RULES),
        ),
        PaperSetting(
            "global-norm clip (backprop config)",
            25.0,
            "code",
            f"{_VSML} (configs/backprop.yaml)",
            tuple(f"{r}.clip" for r in _RULES),
        ),
        PaperSetting(
            "episodes per meta-step (backprop config)",
            128,
            "code",
            f"{_VSML} (configs/backprop.yaml)",
            ("meta_batch",),
            deviation="32 episodes (CPU)",
        ),
        PaperSetting("ways", None, "ours", "VS-ML's tasks use every class of the dataset", ("ways",)),
        PaperSetting(
            "meta-steps",
            10_001,
            "code",
            f"{_VSML} (ES iterations)",
            ("meta_steps",),
            deviation="5,000 BPTT steps (the 10,001 are ES iterations of population 1,024)",
        ),
        PaperSetting(
            "VS-ML start: backprop cloning",
            None,
            "ours",
            "BPTT from scratch barely moves here",
            ("vsml.clone_steps", "vsml.clone_lr", "vsml.clone_alpha"),
        ),
        PaperSetting(
            "BLUR start",
            None,
            "ours",
            "backprop genome (google-research blur's correctness case)",
            ("blur.start", "blur.backprop_lr"),
        ),
        PaperSetting(
            "local rules' remembering phase",
            None,
            "ours",
            "Gregor 2020 has no public code",
            (
                "local-rules.steps",
                "local-rules.remember_steps",
                "local-rules.remember_lr",
                "local-rules.remember_window",
            ),
        ),
        PaperSetting(
            "meta-test",
            None,
            "ours",
            "unseen classes, Fashion-MNIST and KanjiVG, frozen rules",
            ("test_length", "test_episodes", "kanji_classes"),
        ),
        PaperSetting(
            "baselines' grids",
            None,
            "ours",
            "tuned on meta-validation episodes",
            ("sgd.hidden", "sgd.lr_grid", "adam.hidden", "adam.lr_grid", "val_episodes"),
        ),
    ),
    notes={
        "curve_block": "curve resolution",
        "eval_every": "meta-validation interval",
        "val_tasks": "unused",
        "test_tasks": "unused",
    },
)

RECORDS = (FOP, LEARNED_OPTIMIZER, LEARNED_RULES)
