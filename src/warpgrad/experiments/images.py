"""The image-classification experiments: Omniglot, KanjiVG, mini- and tieredImageNet, multi-shot
(WarpGrad / Leap protocol) and few-shot (MAML protocol), and the once-per-process dataset loader
the other image experiments share."""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

from warpgrad.errors import UsageError
from warpgrad.experiments.base import Experiment, Profile, _adam, _profiles, _schedule, _with
from warpgrad.experiments.methods import method_specs
from warpgrad.layers import Conv4
from warpgrad.tasks.base import TaskFamily


def _conv4(o: dict[str, Any], warps: bool) -> nn.Module:
    return Conv4(o["channels"], o["ways"], o["image_size"], o["width"], warp=o["warp"] if warps else None)


def _load_dataset(name: str, o: dict[str, Any]):
    """The dataset, loaded once per process for each set of loader arguments (methods share it)."""
    return _load_dataset_cached(name, tuple(sorted(o["data"].items())))


@functools.lru_cache(maxsize=4)
def _load_dataset_cached(name: str, arguments: tuple[tuple[str, Any], ...]):
    from warpgrad.data.registry import DATASETS

    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name].load(**dict(arguments))


def _multishot_family(dataset: str) -> Callable[[Profile], TaskFamily]:
    def make(p: Profile) -> TaskFamily:
        from warpgrad.tasks.classification import MultiShotFamily

        o = p.options
        return MultiShotFamily(
            _load_dataset(dataset, o),
            o["ways"],
            o["train_per_class"],
            o["test_per_class"],
            o["batch_size"],
            o["augment"],
        )

    return make


def _fewshot_family(dataset: str) -> Callable[[Profile], TaskFamily]:
    def make(p: Profile) -> TaskFamily:
        from warpgrad.tasks.classification import EpisodeFamily

        o = p.options
        return EpisodeFamily(_load_dataset(dataset, o), o["ways"], o["shots"], o["queries"])

    return make


_BASELINES = ("maml", "fomaml", "metasgd", "tnets", "reptile", "leap", "finetune")


def _image_methods(
    warp_lr: float, init: str, init_lr: float, meta_lr: float, meta_optimizer: str = "adam", **warpgrad: Any
) -> dict[str, Any]:
    """Per-method options shared by the image experiments (one meta-optimiser setting for all)."""
    return {
        "warpgrad": {
            "objective": "exact",
            "algorithm": "offline",
            "init": init,
            "meta_optimizer": meta_optimizer,
            "warp_lr": warp_lr,
            "init_lr": init_lr,
            "meta_loss_data": "train",
            "buffer_size": 256,
            "warp_batch": 32,
            **warpgrad,
        },
        **{m: {"meta_optimizer": meta_optimizer, "meta_lr": meta_lr} for m in _BASELINES},
    }


# Omniglot multi-shot (WarpGrad / Leap protocol): 20-way tasks of one alphabet, 15 train / 5 test
# images per character, affine augmentation, 100 inner SGD steps at lr 0.1 on batches of 128, 3×3 conv
# warps, every meta-learner's outer loop SGD at 0.1 but MAML's and FOMAML's at 0.5 (the reference
# code's settings: papers/images.py).
_OMNIGLOT_MULTISHOT = {
    "data": {"image_size": 28},
    "channels": 1,
    "image_size": 28,
    "width": 64,
    "warp": {},
    "ways": 20,
    "train_per_class": 15,
    "test_per_class": 5,
    "batch_size": 128,
    "augment": True,
    "inner_optimizer": "sgd",
    "inner_lr": 0.1,
    "inner_steps": 100,
    **_image_methods(warp_lr=0.1, init="leap", init_lr=0.1, meta_lr=0.1, meta_optimizer="sgd"),
    # the reference's run_multi.py: MAML meta-trains through 5 of the 100 steps; both at outer lr 0.5
    "maml": {"meta_optimizer": "sgd", "meta_lr": 0.5, "horizon": 5},
    "fomaml": {"meta_optimizer": "sgd", "meta_lr": 0.5},
}
_KANJI_MULTISHOT = _with(
    _OMNIGLOT_MULTISHOT,
    data={"n_classes": 600, "drawings": 20, "image_size": 28, "seed": 0, "group_by": "radical", "min_group_size": 20},
)
_KANJI_MULTISHOT_QUICK = _with(
    _KANJI_MULTISHOT,
    ways=5,
    width=16,
    inner_steps=10,
    batch_size=20,
    **_image_methods(warp_lr=3e-3, init="leap", init_lr=3e-3, meta_lr=3e-3, warp_batch=16),
)


def _multishot_smoke(options: dict[str, Any]) -> dict[str, Any]:
    # the baselines keep Adam in smoke (as before the paper profile's outer loop became SGD for all)
    baselines = {m: _adam(o["meta_lr"]) for m, o in options.items() if m in _BASELINES}
    return {
        **_schedule(2, 2, 1, 2, 2),
        "options": _with(options, ways=3, width=4, inner_steps=2, batch_size=6, **baselines),
    }


# Few-shot (MAML protocol): N-way K-shot episodes, 15 queries per class, Conv4 with warps.
_OMNIGLOT_FEWSHOT = {
    "data": {"image_size": 28},
    "channels": 1,
    "image_size": 28,
    "width": 64,
    "warp": {},
    "ways": 5,
    "shots": 1,
    "queries": 15,
    "inner_optimizer": "sgd",
    "inner_lr": 0.4,
    "inner_steps": 1,
    **_image_methods(warp_lr=1e-3, init="maml", init_lr=1e-3, meta_lr=1e-3),
}
_KANJI_FEWSHOT = _with(
    _OMNIGLOT_FEWSHOT,
    data={"n_classes": 1200, "drawings": 20, "image_size": 28, "seed": 0, "group_by": "radical", "min_group_size": 1},
)
_MINIIMAGENET = {
    "data": {},
    "channels": 3,
    "image_size": 84,
    "width": 32,
    "warp": {},
    "ways": 5,
    "shots": 1,
    "queries": 15,
    "inner_optimizer": "sgd",
    "inner_lr": 0.01,
    "inner_steps": 5,
    **_image_methods(warp_lr=1e-3, init="maml", init_lr=1e-3, meta_lr=1e-3),
}


def _fewshot_smoke(options: dict[str, Any]) -> dict[str, Any]:
    return {**_schedule(2, 2, 1, 2, 2), "options": _with(options, width=4, queries=2)}


def _image_experiment(
    name: str,
    description: str,
    dataset: str,
    kind: str,
    profiles: dict[str, Profile],
    make_model: Callable[[dict[str, Any], bool], nn.Module] = _conv4,
) -> Experiment:
    family = _multishot_family(dataset) if kind == "multishot" else _fewshot_family(dataset)
    return Experiment(name, description, profiles, family, method_specs(make_model), dataset)


OMNIGLOT_MULTISHOT = _image_experiment(
    "omniglot-multishot",
    "Omniglot multi-shot (WarpGrad/Leap): 20-way tasks of one alphabet, 15 train / 5 test images per character.",
    "omniglot",
    "multishot",
    _profiles(
        _multishot_smoke(_OMNIGLOT_MULTISHOT),
        (
            "minutes on 2 CPU cores: 5-way, Conv4-16, 10 inner steps, 100 meta-steps of 4 tasks, 100 test tasks",
            _schedule(100, 4, 25, 8, 100),
            _with(_KANJI_MULTISHOT_QUICK, data={"image_size": 28}),
        ),
        (
            "the paper's protocol: 20-way, Conv4-64, 100 inner SGD steps at 0.1, 1000 meta-steps of 20 tasks",
            _schedule(1000, 20, 50, 20, 100),
            _OMNIGLOT_MULTISHOT,
        ),
    ),
)
KANJI_MULTISHOT = _image_experiment(
    "kanji-multishot",
    "KanjiVG multi-shot (offline Omniglot stand-in): tasks of 20 characters sharing a radical, 15/5 drawings each.",
    "kanjivg",
    "multishot",
    _profiles(
        _multishot_smoke(
            _with(_KANJI_MULTISHOT, data={**_KANJI_MULTISHOT["data"], "n_classes": 200, "min_group_size": 3})
        ),
        (
            "minutes on 2 CPU cores: 5-way, Conv4-16, 10 inner steps, 100 meta-steps of 4 tasks, 100 test tasks",
            _schedule(100, 4, 25, 8, 100),
            _KANJI_MULTISHOT_QUICK,
        ),
        (
            "Omniglot multi-shot protocol on KanjiVG: 20-way, 100 inner steps, 1000 meta-steps of 20 tasks",
            _schedule(1000, 20, 50, 20, 100),
            _KANJI_MULTISHOT,
        ),
    ),
)
OMNIGLOT_FEWSHOT = _image_experiment(
    "omniglot-fewshot",
    "Omniglot few-shot (MAML protocol): N-way K-shot episodes (--set ways=20 --set shots=5 for the variants).",
    "omniglot",
    "fewshot",
    _profiles(
        _fewshot_smoke(_OMNIGLOT_FEWSHOT),
        (
            "minutes on 2 CPU cores: 5-way 1-shot, width 32, 300 meta-steps of 8 episodes",
            _schedule(300, 8, 50, 32, 200),
            _with(_OMNIGLOT_FEWSHOT, width=32),
        ),
        (
            "MAML's protocol: Conv4-64, 1 inner step at 0.4, 60k meta-steps of 32 episodes, 600 test episodes",
            _schedule(60_000, 32, 1000, 100, 600),
            _OMNIGLOT_FEWSHOT,
        ),
    ),
)
KANJI_FEWSHOT = _image_experiment(
    "kanji-fewshot",
    "KanjiVG few-shot: N-way K-shot episodes of rendered kanji (offline stand-in for omniglot-fewshot).",
    "kanjivg",
    "fewshot",
    _profiles(
        _fewshot_smoke(_with(_KANJI_FEWSHOT, data={**_KANJI_FEWSHOT["data"], "n_classes": 60})),
        (
            "minutes on 2 CPU cores: 20-way 1-shot, Conv4-16, 5 queries per class, 200 meta-steps of 4 episodes",
            _schedule(200, 4, 50, 16, 200),
            _with(_KANJI_FEWSHOT, width=16, ways=20, queries=5),
        ),
        (
            "omniglot-fewshot's protocol on KanjiVG: 60k meta-steps of 32 episodes, 600 test episodes",
            _schedule(60_000, 32, 1000, 100, 600),
            _KANJI_FEWSHOT,
        ),
    ),
)
# mini- and tieredImageNet share the protocol (Warp-MAML paper): one set of profiles for both
_IMAGENET_PROFILES = _profiles(
    _fewshot_smoke(_MINIIMAGENET),
    (
        "minutes on 2 CPU cores: 5-way 1-shot, width 16, 200 meta-steps of 4 episodes",
        _schedule(200, 4, 50, 16, 100),
        _with(_MINIIMAGENET, width=16),
    ),
    (
        "the paper's protocol: Conv4-32, 5 inner steps at 0.01, 60k meta-steps of 4 episodes, 600 test episodes",
        _schedule(60_000, 4, 1000, 100, 600),
        _MINIIMAGENET,
    ),
)
MINIIMAGENET = _image_experiment(
    "miniimagenet",
    "miniImageNet 5-way 1/5-shot (64/16/20 classes; --set shots=5), Conv4-32 with warps (Warp-MAML).",
    "miniimagenet",
    "fewshot",
    _IMAGENET_PROFILES,
)
TIEREDIMAGENET = _image_experiment(
    "tieredimagenet",
    "tieredImageNet 5-way 1/5-shot (351/97/160 classes; --set shots=5), Conv4-32 with warps (Warp-MAML).",
    "tieredimagenet",
    "fewshot",
    _IMAGENET_PROFILES,
)
