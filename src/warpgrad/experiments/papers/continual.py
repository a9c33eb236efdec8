"""The papers' settings for the continual-learning experiments' ``paper`` profiles: the permuted
and split streams (EWC, Kirkpatrick et al. 2017; Zenke et al. 2017) and the OML/ANML meta-test
protocol (Javed & White 2019; Beaulieu et al. 2020). The split protocol's network and scenario were
read in Zenke et al.'s code (ganguli-lab/pathint), the OML/ANML settings in the authors' code
(khurramjaved96/mrcl, uvm-neurobotics-lab/ANML); EWC's numbers were not re-read and stay
``unverified``, and the tuned settings are ``ours``."""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_EWC = "EWC (Kirkpatrick et al. 2017), permuted MNIST"
_PATHINT = "ganguli-lab/pathint fig_split_mnist/Figure split MNIST.ipynb"
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
            "code",
            f"{_PATHINT} (set_active_outputs masks the softmax to the experience's two classes in training "
            "and evaluation: multi-head)",
            ("scenario",),
        ),
        PaperSetting(
            "network (hidden layers)",
            (256, 256),
            "code",
            f"{_PATHINT} (n_hidden_units = 256: two Dense ReLU layers)",
            ("hidden",),
            deviation="(400, 400) like fmnist-permuted's paper profile",
        ),
        PaperSetting("optimiser", None, "ours", "the protocol fixes SGD for EWC (docs/continual.md)", ("optimizer",)),
        _STREAM_SCHEDULE,
    ),
    notes=_METHOD_NOTES,
)

_ANML = "ANML (Beaulieu et al. 2020), as summarised in METHODS.md"
_ANML_CODE = "uvm-neurobotics-lab/ANML"
_OML_CODE = "khurramjaved96/mrcl (OML; the code after its July 2020 fix)"


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
                "code",
                f"{_OML_CODE} README (oml_omniglot.py command: --update_lr 0.03 --meta_lr 1e-4)",
                ("oml.inner_lr", "oml.meta_lr"),
            ),
            PaperSetting(
                "meta-steps",
                20_000,
                "code",
                f"{_ANML_CODE} README (mrcl_classification.py command: --steps 20000; argparse default 40000); "
                f"OML's differ: {_OML_CODE} README runs --steps 700000",
                ("meta_steps",),
            ),
            PaperSetting(
                "OML representation: conv layers × channels",
                (256,) * 6,
                "code",
                f"{_OML_CODE} model/modelfactory.py (six 3×3 convs of 256 channels)",
                ("widths",),
            ),
            PaperSetting(
                "ANML NM / PN channels",
                ((112,) * 3, (256,) * 3),
                "code",
                f"{_ANML_CODE} model/modelfactory.py (Neuromodulation: nm_channels = 112, channels = 256, "
                "three convs each)",
                ("anml.nm_widths", "anml.pn_widths"),
            ),
            PaperSetting(
                "conv layers",
                "OML: 3×3 convs with strides 2, 1, 2, 1, 2, 2 and ReLU, no normalisation; ANML (NM and PN): "
                "3×3 conv, batch norm, ReLU, a 2×2 max-pool after the first two",
                "code",
                f"{_OML_CODE} model/modelfactory.py; {_ANML_CODE} model/learner.py (forward)",
                profile="this library's stride-2 conv stacks without normalisation",
                deviation="one conv stack for both methods (docs/continual.md)",
            ),
            PaperSetting(
                "output units",
                1000,
                "code",
                f"{_OML_CODE} model/modelfactory.py (linear 1000); {_ANML_CODE} model/modelfactory.py (fc 1000)",
                ("outputs",),
            ),
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
                "code",
                f"{_ANML_CODE} datasets/omniglot.py (the first 15 of a character's 20 images to train on, the "
                "last 5 held out)",
                ("stream_per_class", "held_out_per_class"),
            ),
            PaperSetting(
                "runs",
                10,
                "code",
                f"{_ANML_CODE} README (evaluate_classification.py command: --runs 10; argparse default 50; "
                "OML's README averages 50 runs)",
                ("runs",),
            ),
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
        "code",
        f"{_ANML_CODE} mrcl_classification.py and {_OML_CODE} oml_omniglot.py (the first 963 classes of the "
        "background set to meta-train on); the meta-test streams draw from the evaluation set",
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
