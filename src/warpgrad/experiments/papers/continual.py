"""The papers' settings for the continual-learning experiments' ``paper`` profiles: the permuted
and split streams (EWC, Kirkpatrick et al. 2017; Zenke et al. 2017) and the OML/ANML meta-test
protocol (Javed & White 2019; Beaulieu et al. 2020). Most of these papers' numbers were not
re-read here: they are recorded as ``unverified``, and the tuned settings as ``ours``."""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_EWC = "EWC (Kirkpatrick et al. 2017), permuted MNIST"
_TUNED = "tuned on held-out training images for the quick profile (docs/continual.md)"
_METHOD_NOTES = {
    "ewc_lambda": _TUNED,
    "lr": _TUNED,
    "epochs": _TUNED,
    "batch_size": "not re-read from the papers",
    "fisher_samples": "not re-read from the papers",
    "probe_samples": "linear probes are ours (docs/representations.md)",
    "runs": "repetitions for an interval",
    "validation": "0: evaluate on the test set",
    "train_per_experience": "all training images of an experience (None)",
}
_STREAM_SCHEDULE = PaperSetting(
    "engine schedule",
    None,
    "ours",
    "a stream run has no meta-training schedule",
    ("meta_steps", "meta_batch", "eval_every", "val_tasks", "test_tasks"),
)


def _permuted(experiment: str, dataset: str, stand_in: str, experiences: PaperSetting) -> PaperRecord:
    return PaperRecord(
        experiment,
        _EWC,
        (
            PaperSetting(
                "dataset", "MNIST", "paper", "EWC (permuted MNIST experiment)", profile=dataset, deviation=stand_in
            ),
            experiences,
            PaperSetting("optimiser", "sgd", "unverified", "EWC (SGD; per docs/continual.md)", ("optimizer",)),
            PaperSetting(
                "network (hidden layers)",
                (400, 400),
                "unverified",
                "EWC (from memory)",
                ("hidden",),
                deviation="" if experiment.startswith("fmnist") else "(100, 100) for 8×8 digits",
            ),
            PaperSetting(
                "Fisher",
                "exact (expected over the model's predictions)",
                "paper",
                "EWC (the Fisher information of the model's predictions)",
                profile="`ewc`: exact; `ewc-empirical`, `ewc-online` as variants",
            ),
            _STREAM_SCHEDULE,
        ),
        notes=_METHOD_NOTES,
    )


DIGITS_PERMUTED = _permuted(
    "digits-permuted",
    "scikit-learn digits (8×8)",
    "digits: an offline, CPU-sized stand-in",
    PaperSetting(
        "experiences (permutations)", 10, "unverified", "EWC (up to 10 permutations; from memory)", ("experiences",)
    ),
)
FMNIST_PERMUTED = _permuted(
    "fmnist-permuted",
    "Fashion-MNIST",
    "Fashion-MNIST: the EWC protocol on a harder dataset (docs/continual.md)",
    PaperSetting(
        "experiences (permutations)", 10, "unverified", "EWC (up to 10 permutations; from memory)", ("experiences",)
    ),
)
FMNIST_SPLIT = PaperRecord(
    "fmnist-split",
    "the split protocol of Zenke et al. 2017 (split MNIST)",
    (
        PaperSetting(
            "dataset",
            "MNIST",
            "paper",
            "Zenke et al. 2017 (split MNIST)",
            profile="Fashion-MNIST",
            deviation="Fashion-MNIST: harder than MNIST (docs/continual.md)",
        ),
        PaperSetting("experiences", 5, "paper", "Zenke et al. 2017 (split MNIST)", ("experiences",)),
        PaperSetting(
            "classes per experience", 2, "paper", "Zenke et al. 2017 (0/1, 2/3, …)", ("classes_per_experience",)
        ),
        PaperSetting(
            "scenario",
            "task",
            "unverified",
            "Zenke et al. 2017 (multi-head; per van de Ven & Tolias 2019)",
            ("scenario",),
        ),
        PaperSetting(
            "network (hidden layers)",
            (256, 256),
            "unverified",
            "Zenke et al. 2017 (from memory)",
            ("hidden",),
            deviation="(400, 400) like fmnist-permuted's paper profile; 256 not verified",
        ),
        PaperSetting("optimiser", None, "ours", "the protocol fixes SGD for EWC (docs/continual.md)", ("optimizer",)),
        _STREAM_SCHEDULE,
    ),
    notes=_METHOD_NOTES,
)

_ANML = "ANML (Beaulieu et al. 2020), as summarised in METHODS.md"
_FROM_MEMORY = "the papers' Omniglot setting (sequential.py's notes; not re-read)"


def _sequential(experiment: str, dataset: PaperSetting) -> PaperRecord:
    return PaperRecord(
        experiment,
        "the OML/ANML meta-test protocol (Javed & White 2019; Beaulieu et al. 2020)",
        (
            dataset,
            PaperSetting("trajectory (images of one class, batch 1)", 20, "paper", _ANML, ("trajectory",)),
            PaperSetting("remembered images per meta-step", 64, "paper", _ANML, ("remember",)),
            PaperSetting("ANML inner learning rate", 0.1, "paper", _ANML, ("anml.inner_lr",)),
            PaperSetting("ANML meta-optimiser: Adam at", 1e-3, "paper", _ANML, ("anml.meta_lr",)),
            PaperSetting(
                "first order (no second-order terms)",
                False,
                "paper",
                "OML, ANML (the original ANML code is first order by accident: METHODS.md)",
                ("oml.first_order", "anml.first_order"),
            ),
            PaperSetting(
                "OML inner / meta learning rate",
                (0.03, 1e-4),
                "unverified",
                _FROM_MEMORY,
                ("oml.inner_lr", "oml.meta_lr"),
            ),
            PaperSetting("meta-steps", 20_000, "unverified", _FROM_MEMORY, ("meta_steps",)),
            PaperSetting(
                "OML representation: conv layers × channels", (256,) * 6, "unverified", _FROM_MEMORY, ("widths",)
            ),
            PaperSetting(
                "ANML NM / PN channels",
                ((112,) * 3, (256,) * 3),
                "unverified",
                _FROM_MEMORY,
                ("anml.nm_widths", "anml.pn_widths"),
            ),
            PaperSetting(
                "conv layers",
                "the papers' conv stacks",
                "unverified",
                _FROM_MEMORY,
                profile="this library's stride-2 conv stacks without normalisation",
                deviation="one conv stack for both methods (docs/continual.md)",
            ),
            PaperSetting("output units", 1000, "unverified", _FROM_MEMORY, ("outputs",)),
            PaperSetting("meta-test classes (up to)", 600, "paper", _ANML, ("test_classes",)),
            PaperSetting(
                "meta-test: one SGD step per image, one pass",
                True,
                "paper",
                _ANML,
                profile="one SGD step per image, one pass, class after class",
            ),
            PaperSetting(
                "stream / held-out images per class",
                (15, 5),
                "unverified",
                _FROM_MEMORY,
                ("stream_per_class", "held_out_per_class"),
            ),
            PaperSetting("runs", 10, "unverified", _FROM_MEMORY, ("runs",)),
            PaperSetting(
                "meta-test learning rate", None, "ours", "the best of a grid on val classes", ("lr_grid", "tune_runs")
            ),
        ),
        notes={
            "data": "loader arguments",
            "channels": "grey-scale images",
            "image_size": "28×28 like the few-shot experiments",
            "meta_classes": "0: every train class",
            "reset_class_row": "both papers' code re-initialise the class row (docs/continual.md)",
            "head_reset": "the head starts at zeros at meta-test",
            "pretrain": "the `pretrain` baseline is ours",
            "meta_batch": "one trajectory per meta-step",
            "eval_every": "no validation during meta-training",
            "val_tasks": "no validation during meta-training",
            "test_tasks": "`runs` meta-test streams instead",
            "anml.inner": "which ANML parameters adapt in the inner loop",
        },
    )


OMNIGLOT_SEQUENTIAL = _sequential(
    "omniglot-sequential",
    PaperSetting(
        "dataset",
        "Omniglot (963 background classes)",
        "unverified",
        _FROM_MEMORY,
        profile="Omniglot: 25 background alphabets to train on, 5 to validate, the evaluation set to test",
        deviation="5 background alphabets kept for validation (fewer meta-training classes)",
    ),
)
KANJI_SEQUENTIAL = _sequential(
    "kanji-sequential",
    PaperSetting(
        "dataset",
        "Omniglot",
        "paper",
        _ANML,
        profile="KanjiVG: 3,500 characters",
        deviation="KanjiVG, an offline stand-in for Omniglot",
    ),
)

RECORDS = (DIGITS_PERMUTED, FMNIST_PERMUTED, FMNIST_SPLIT, OMNIGLOT_SEQUENTIAL, KANJI_SEQUENTIAL)
