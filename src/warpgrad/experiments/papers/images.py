"""The papers' settings for the image experiments' ``paper`` profiles.

Multi-shot: WarpGrad's Omniglot protocol (Flennerhag et al., ICLR 2020), whose reference code is
github.com/flennerhag/warpgrad ``src/omniglot/{main,data,model,run_multi}.py`` (argparse defaults and
the launcher's per-method settings, read), inherited from Leap's Omniglot protocol (arXiv 1812.01054
§4.1, read). Few-shot: MAML's protocol (Finn et al., ICML 2017, §5 and App. A.1, read;
github.com/cbfinn/maml ``main.py``, read), which WarpGrad's Warp-MAML runs on mini- and tieredImageNet
follow. The WarpGrad paper's own text beyond its abstract was not available to re-read.
"""

from __future__ import annotations

from warpgrad.experiments.papers.base import PaperRecord, PaperSetting

_MAIN = "flennerhag/warpgrad src/omniglot/main.py"
_DATA = "flennerhag/warpgrad src/omniglot/data.py"
_MODEL = "flennerhag/warpgrad src/omniglot/model.py"
_RUN_MULTI = "flennerhag/warpgrad src/omniglot/run_multi.py"  # the launcher of the Omniglot runs
_LEAP = "Leap (Flennerhag et al. 2019, arXiv 1812.01054) §4.1"  # the Omniglot protocol the reference code keeps
_MAML_A1 = "MAML App. A.1"
_MAML_MAIN = "cbfinn/maml main.py"
_BASELINES = ("maml", "fomaml", "metasgd", "tnets", "reptile", "leap", "finetune")
_REFERENCE_OUTER = ("maml", "fomaml", "reptile", "leap")  # the reference's wrappers with an outer optimiser
_NOT_COMPARED = ("metasgd", "tnets")


def _all(field: str, methods: tuple[str, ...] = _BASELINES) -> tuple[str, ...]:
    return tuple(f"{m}.{field}" for m in methods)


_WARP = PaperSetting(
    "warp layers",
    "one 3×3 conv after each conv block, same width, linear (no activation, no batch norm)",
    "code",
    f"{_MODEL} (WarpedOmniConv, WarpLayer); {_MAIN} (warp defaults)",
    profile="one 3×3 conv warp after each block, linear (`warp` = defaults), identity-initialised",
    deviation="identity initialisation (the reference uses torch's default conv init)",
)


def _dataset(name: str, where: str, profile: str) -> PaperSetting:
    stand_in = "KanjiVG, an offline stand-in for Omniglot (docs/kanjivg.md)" if profile == "KanjiVG" else ""
    return PaperSetting("dataset", name, "paper", where, profile=profile, deviation=stand_in)


def _multishot(experiment: str, dataset: str, groups: tuple[PaperSetting, ...]) -> PaperRecord:
    return PaperRecord(
        experiment,
        "WarpGrad's Omniglot multi-shot protocol (Flennerhag et al. 2020) and its reference code",
        (
            _dataset("Omniglot", "WarpGrad §4 (Omniglot experiment)", dataset),
            *groups,
            PaperSetting("classes per task", 20, "code", f"{_MAIN} (--classes)", ("ways",)),
            PaperSetting(
                "images per class to train on / held out",
                (15, 5),
                "code",
                f"{_DATA} (HOLD_OUT = 5 of 20)",
                ("train_per_class", "test_per_class"),
            ),
            PaperSetting("image size", 28, "code", f"{_MAIN} (args.imsize)", ("image_size", "data.image_size")),
            PaperSetting(
                "augmentation (rotation 0–360°, translation ±20%, scale 0.8–1.2)",
                True,
                "code",
                f"{_DATA} (RandomAffine, on training and held-out images)",
                ("augment",),
            ),
            PaperSetting("network width (Conv4 filters)", 64, "code", f"{_MAIN} (--num_filters)", ("width",)),
            PaperSetting(
                "conv block",
                "conv 3×3 → max-pool → batch norm → ReLU",
                "code",
                f"{_MODEL} (conv_block)",
                profile="conv 3×3 → batch norm (batch statistics) → ReLU → max-pool",
                deviation="pooling after batch norm and ReLU (the few-shot Conv4 of warpgrad.layers)",
            ),
            _WARP,
            PaperSetting("inner optimiser", "sgd", "code", f"{_MAIN} (--inner_opt)", ("inner_optimizer",)),
            PaperSetting("inner learning rate", 0.1, "code", f"{_MAIN} (--inner_kwargs lr 0.1)", ("inner_lr",)),
            PaperSetting(
                "inner steps (training and evaluation)",
                100,
                "code",
                f"{_MAIN} (--task_train_steps, --task_val_steps)",
                ("inner_steps",),
            ),
            PaperSetting(
                "inner batch size",
                128,
                "code",
                f"{_MAIN} (--task_batch_size); METHODS.md: *verify* in the paper",
                ("batch_size",),
            ),
            PaperSetting(
                "MAML's inner steps in meta-training (its horizon)",
                5,
                "code",
                f"{_RUN_MULTI} (get_model_config: 5 task_train_steps for maml, 100 for fomaml; "
                f"--task_val_steps keeps main.py's 100 for both); {_LEAP} (MAML backpropagates through 5 "
                "steps). FOMAML's 100 is the profile's `inner_steps` (no horizon). Was recorded as 5 for both "
                "(METHODS.md, unverified)",
                ("maml.horizon",),
            ),
            PaperSetting("tasks per meta-batch", 20, "code", f"{_MAIN} (--meta_batch_size)", ("meta_batch",)),
            PaperSetting("meta-steps", 1000, "code", f"{_MAIN} (--meta_train_steps)", ("meta_steps",)),
            PaperSetting(
                "meta-optimiser (warps, θ₀, MAML, FOMAML, Reptile, Leap)",
                "sgd",
                "code",
                f"{_MAIN} (--outer_opt)",
                ("warpgrad.meta_optimizer", *_all("meta_optimizer", _REFERENCE_OUTER)),
            ),
            PaperSetting(
                "meta learning rate (warps, θ₀, Reptile, Leap)",
                0.1,
                "code",
                f"{_MAIN} (--outer_kwargs lr 0.1); {_RUN_MULTI} (get_model_config: outer lr 0.1 but for MAML/FOMAML)",
                ("warpgrad.warp_lr", "warpgrad.init_lr", *_all("meta_lr", ("reptile", "leap"))),
            ),
            PaperSetting(
                "meta learning rate (MAML, FOMAML)",
                0.5,
                "code",
                f"{_RUN_MULTI} (get_model_config: outer lr 0.5 for maml and fomaml; main.py's default is 0.1). "
                "Was recorded as main.py's 0.1",
                _all("meta_lr", ("maml", "fomaml")),
            ),
            PaperSetting(
                "fine-tuning's pre-training optimiser",
                ("sgd", 0.1),
                "code",
                f"{_MODEL} (FtWrapper trains with the inner optimiser)",
                ("finetune.meta_optimizer", "finetune.meta_lr"),
            ),
            PaperSetting(
                "Meta-SGD, T-Nets outer loop",
                None,
                "ours",
                "not in the paper's Omniglot comparison; the others' setting",
                (*_all("meta_optimizer", _NOT_COMPARED), *_all("meta_lr", _NOT_COMPARED)),
            ),
            PaperSetting(
                "WarpGrad initialisation", "leap", "code", f"{_MAIN} (--meta_model warp_leap)", ("warpgrad.init",)
            ),
            PaperSetting(
                "WarpGrad algorithm",
                "offline",
                "paper",
                "WarpGrad Algorithm 2 (replay buffer)",
                ("warpgrad.algorithm",),
            ),
            PaperSetting(
                "WarpGrad objective",
                "exact",
                "paper",
                "WarpGrad Eq. 11 (the reference code computes Eq. 12, first order, by accident: METHODS.md)",
                ("warpgrad.objective",),
            ),
            PaperSetting(
                "WarpGrad meta-loss batches",
                "train",
                "code",
                "flennerhag/warpgrad src/warpgrad (fresh training batches per point; METHODS.md)",
                ("warpgrad.meta_loss_data",),
            ),
            PaperSetting(
                "replay buffer and warp batch",
                None,
                "ours",
                "reference defaults not read",
                ("warpgrad.buffer_size", "warpgrad.warp_batch"),
            ),
            PaperSetting(
                "validation interval (meta-steps)",
                20,
                "code",
                f"{_MAIN} (--test_ival)",
                ("eval_every",),
                deviation="every 50 meta-steps (validation of 20 tasks of 100 steps is costly)",
            ),
            PaperSetting(
                "test tasks",
                10,
                "code",
                f"{_DATA} (TEST = 10 alphabets, one task each)",
                ("test_tasks",),
                deviation="100 tasks drawn from the test groups: a tighter interval than 10",
            ),
            PaperSetting(
                "validation tasks", None, "ours", "the reference validates on its remaining alphabets", ("val_tasks",)
            ),
            PaperSetting(
                "metric",
                "accuracy on the held-out images after adaptation",
                "code",
                f"{_MAIN} (evaluate)",
                profile="accuracy on the held-out images after adaptation, mean ± 95% CI over test tasks",
            ),
        ),
        notes={"channels": "grey-scale images", "data": "loader arguments"},
    )


_OMNIGLOT_GROUPS = (
    PaperSetting(
        "meta-training alphabets",
        25,
        "code",
        f"{_RUN_MULTI} (--npres: runs at 1, 3, 5, 10, 15, 20 and 25 meta-training alphabets, 25 the most; "
        f"{_MAIN}'s --num_pretrain default of 30 is not used there); {_LEAP} (1 to 25 alphabets), Fig. 3 (25)",
        profile="25 of the 30 background alphabets (5 for validation); alphabets with < 20 characters kept "
        "when they have `ways` characters",
    ),
    PaperSetting(
        "test alphabets",
        10,
        "code",
        f"{_DATA} (TEST = 10, from the same 50 alphabets)",
        profile="the 20 evaluation alphabets",
        deviation="the standard background/evaluation split",
    ),
)
_KANJI_GROUPS = (
    PaperSetting(
        "task groups",
        "Omniglot alphabets (≥ 20 characters)",
        "code",
        f"{_DATA} (alphabets filtered by size)",
        profile="KanjiVG radicals with ≥ `data.min_group_size` characters, 600 characters (`data.n_classes`)",
        deviation="radicals play the alphabets (docs/kanjivg.md)",
    ),
)


def _fewshot(experiment: str, reference: str, dataset: PaperSetting, settings: tuple[PaperSetting, ...]) -> PaperRecord:
    return PaperRecord(
        experiment,
        reference,
        (
            dataset,
            PaperSetting(
                "ways / shots",
                (5, 1),
                "paper",
                "MAML §5.2 (5-way 1-shot; 5-shot and 20-way by --set)",
                ("ways", "shots"),
            ),
            *settings,
            PaperSetting("inner optimiser", "sgd", "paper", "MAML Algorithm 2", ("inner_optimizer",)),
            PaperSetting(
                "meta-optimiser (MAML's; every method here)",
                "adam",
                "paper",
                "MAML §5.1 (Adam as the meta-optimiser); cbfinn/maml maml.py (tf.train.AdamOptimizer for every "
                "datasource)",
                ("warpgrad.meta_optimizer", *_all("meta_optimizer")),
            ),
            PaperSetting(
                "meta learning rate",
                1e-3,
                "code",
                f"{_MAML_MAIN} (flag meta_lr, default 0.001; none of the usage commands sets it)",
                ("warpgrad.warp_lr", "warpgrad.init_lr", *_all("meta_lr")),
            ),
            PaperSetting(
                "meta-steps",
                60_000,
                "paper",
                f"{_MAML_A1} (all models trained for 60000 iterations); {_MAML_MAIN} usage docstring "
                "(--metatrain_iterations=60000 in every Omniglot and MiniImagenet command)",
                ("meta_steps",),
            ),
            PaperSetting(
                "test episodes",
                600,
                "code",
                f"{_MAML_MAIN} (NUM_TEST_POINTS = 600; the 95% interval is over them)",
                ("test_tasks",),
            ),
            _WARP,
            PaperSetting(
                "WarpGrad initialisation", "maml", "paper", "WarpGrad §4 (Warp-MAML for few-shot)", ("warpgrad.init",)
            ),
            PaperSetting(
                "WarpGrad algorithm / objective",
                ("offline", "exact"),
                "paper",
                "WarpGrad Algorithm 2, Eq. 11",
                ("warpgrad.algorithm", "warpgrad.objective"),
            ),
            PaperSetting(
                "WarpGrad meta-loss batches, buffer, warp batch",
                None,
                "ours",
                "not stated for few-shot",
                ("warpgrad.meta_loss_data", "warpgrad.buffer_size", "warpgrad.warp_batch"),
            ),
            PaperSetting("validation", None, "ours", "not part of the protocol", ("eval_every", "val_tasks")),
        ),
        notes={"channels": "the images' channels", "data": "loader arguments", "image_size": "the images' size"},
    )


_OMNIGLOT_FEWSHOT = (
    PaperSetting("image size", 28, "paper", "MAML §5.2 (downsampled to 28×28)", ("image_size", "data.image_size")),
    PaperSetting("network width", 64, "paper", "MAML §5.2 (64 filters)", ("width",)),
    PaperSetting(
        "network",
        "Conv4 (3×3 conv, batch norm, ReLU) with strided convolutions, no max-pool",
        "paper",
        "MAML §5.2 (for Omniglot, strided convolutions instead of max-pooling); cbfinn/maml main.py "
        "(--max_pool default False, not set by the Omniglot commands)",
        profile="Conv4 with 2×2 max-pool",
        deviation="one Conv4 for every image experiment",
    ),
    PaperSetting(
        "queries per class",
        1,
        "code",
        f"{_MAML_MAIN} (Omniglot: DataGenerator(update_batch_size*2), so K query images per class, 1 at 1-shot)",
        ("queries",),
        deviation="15 queries per class as on miniImageNet (a steadier test batch)",
    ),
    PaperSetting(
        "inner learning rate",
        0.4,
        "paper",
        f"{_MAML_A1} (5-way Omniglot: α = 0.4); {_MAML_MAIN} usage docstring (--update_lr=0.4)",
        ("inner_lr",),
    ),
    PaperSetting(
        "inner steps (meta-training)",
        1,
        "paper",
        f"{_MAML_A1} (5-way Omniglot: 1 gradient step); {_MAML_MAIN} usage docstring (--num_updates=1)",
        ("inner_steps",),
    ),
    PaperSetting(
        "inner steps at test time",
        3,
        "paper",
        f"{_MAML_A1} (5-way Omniglot evaluated with 3 gradient steps; {_MAML_MAIN} tests with "
        "test_num_updates = 10). Was cited from learn2learn's README",
        profile="`inner_steps` (1)",
        deviation="one inner loop for meta-training and test",
    ),
    PaperSetting(
        "tasks per meta-batch",
        32,
        "paper",
        f"{_MAML_A1} (5-way Omniglot: 32 tasks); {_MAML_MAIN} usage docstring (--meta_batch_size=32)",
        ("meta_batch",),
    ),
)
_IMAGENET = (
    PaperSetting(
        "image size",
        84,
        "code",
        "cbfinn/maml data/miniImagenet/proc_images.py (images resized to 84×84), data_generator.py "
        "(img_size (84, 84)); was cited as MAML §5.2, which does not state it",
        ("image_size",),
    ),
    PaperSetting(
        "network width",
        32,
        "paper",
        f"MAML §5.2 (32 filters per layer for MiniImagenet, to reduce overfitting); {_MAML_MAIN} usage "
        "docstring (--num_filters=32)",
        ("width",),
    ),
    PaperSetting(
        "queries per class",
        15,
        "paper",
        f"{_MAML_A1} (15 examples per class for the post-update meta-gradient); {_MAML_MAIN} "
        "(DataGenerator(update_batch_size+15) in meta-training; K per class when testing)",
        ("queries",),
    ),
    PaperSetting(
        "inner learning rate",
        0.01,
        "paper",
        f"{_MAML_A1} (MiniImagenet: α = 0.01); {_MAML_MAIN} usage docstring (--update_lr=0.01)",
        ("inner_lr",),
    ),
    PaperSetting(
        "inner steps (meta-training)",
        5,
        "paper",
        f"{_MAML_A1} (MiniImagenet: 5 gradient steps); {_MAML_MAIN} usage docstring (--num_updates=5)",
        ("inner_steps",),
    ),
    PaperSetting(
        "inner steps at test time",
        10,
        "paper",
        f"{_MAML_A1} (MiniImagenet: 10 gradient steps at test time); {_MAML_MAIN} (test_num_updates = 10)",
        profile="`inner_steps` (5)",
        deviation="one inner loop for meta-training and test",
    ),
    PaperSetting(
        "tasks per meta-batch",
        4,
        "paper",
        f"{_MAML_A1} (MiniImagenet: 4 tasks for 1-shot, 2 for 5-shot); {_MAML_MAIN} usage docstring "
        "(--meta_batch_size=4 in both commands)",
        ("meta_batch",),
    ),
)

RECORDS = (
    _multishot("omniglot-multishot", "Omniglot", _OMNIGLOT_GROUPS),
    _multishot("kanji-multishot", "KanjiVG", _KANJI_GROUPS),
    _multishot("kanji-multishot-ablation", "KanjiVG", _KANJI_GROUPS),  # kanji-multishot's profiles, variants added
    _fewshot(
        "omniglot-fewshot",
        "MAML's Omniglot protocol (Finn et al. 2017) and cbfinn/maml",
        _dataset("Omniglot", "MAML §5.2", "Omniglot"),
        _OMNIGLOT_FEWSHOT,
    ),
    _fewshot(
        "kanji-fewshot",
        "MAML's Omniglot protocol (Finn et al. 2017) and cbfinn/maml, on KanjiVG",
        _dataset("Omniglot", "MAML §5.2", "KanjiVG"),
        _OMNIGLOT_FEWSHOT,
    ),
    _fewshot(
        "miniimagenet",
        "MAML's miniImageNet protocol (Finn et al. 2017), which WarpGrad's Warp-MAML follows",
        _dataset(
            "miniImageNet (64/16/20 classes)",
            "WarpGrad §4 (64, 16 and 20 meta-training/validation/test classes, as quoted from the paper by "
            "ri.k117.org's summary); MAML §5.2's own text says 64/12/24 (was cited as MAML §5.2)",
            "miniImageNet (64/16/20 classes)",
        ),
        _IMAGENET,
    ),
    _fewshot(
        "tieredimagenet",
        "MAML's miniImageNet protocol on tieredImageNet, as WarpGrad's Warp-MAML runs",
        _dataset(
            "tieredImageNet (351/97/160 classes)", "WarpGrad §4 (tieredImageNet)", "tieredImageNet (351/97/160 classes)"
        ),
        _IMAGENET,
    ),
)
