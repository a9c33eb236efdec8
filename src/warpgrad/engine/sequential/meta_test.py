"""The meta-test of the sequential protocol: streams, the online meta-test, learning-rate tuning.

:func:`sequential_streams` builds the class-sequence streams, :func:`meta_test_streams` runs a
learner's meta-test on each (a linear head on frozen features through the closed-form
:func:`linear_head_meta_test`), :func:`tune_lr` chooses the meta-test lr on validation streams
and :func:`evaluate` tunes on ``val`` then meta-tests on ``test``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.methods.continual.oml import reset_head

VAL_SEED_OFFSET = 1_000_000
TEST_SEED_OFFSET = 2_000_000


# ------------------------------------------------------------------------------ meta-test


def sequential_streams(
    dataset: Any, split: str, n_classes: int, stream_per_class: int, held_out_per_class: int, seeds: Sequence[int]
) -> list[Any]:
    """One class-sequence stream per seed (:func:`warpgrad.tasks.continual.class_sequence_stream`)."""
    from warpgrad.tasks.continual import class_sequence_stream

    return [
        class_sequence_stream(dataset, split, n_classes, stream_per_class, held_out_per_class, seed=s) for s in seeds
    ]


@torch.no_grad()
def linear_head_meta_test(
    stream_features: Sequence[Tensor],
    eval_features: Sequence[Tensor],
    weight: Tensor,
    bias: Tensor | None,
    lr: float,
    labels: Sequence[int],
    after_class: Callable[[int, Callable[[Tensor], Tensor]], None] | None = None,
) -> dict[str, Any]:
    """:func:`~warpgrad.methods.continual.oml.continual_meta_test` for a linear head with
    cross-entropy, on precomputed features, with the gradient in closed form: for features f and
    label y, ∇_W = (softmax(Wf + b) − e_y) fᵀ and ∇_b = softmax(Wf + b) − e_y.

    Returns ``accuracy`` (held-out, after each class), ``per_class`` and ``train_accuracy`` (on
    the stream images of all classes, after the stream). ``after_class(c, head)``, when given, is
    called after class ``c`` with the current head (features ↦ logits), e.g. to probe.
    """
    W = weight.detach().clone()
    b = None if bias is None else bias.detach().clone()
    accuracy, per_class = [], []

    def correct(features: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for j, f in enumerate(features):
            logits = f @ W.T + (0 if b is None else b)
            out.append((logits.argmax(-1) == labels[j]).to(f.dtype))
        return out

    for c, feats in enumerate(stream_features):
        y = int(labels[c])
        for f in feats:
            p = torch.softmax(W @ f + (0 if b is None else b), -1)
            p[y] -= 1
            W.sub_(lr * torch.outer(p, f))
            if b is not None:
                b.sub_(lr * p)
        hits = correct(eval_features[: c + 1])
        if after_class is not None:
            after_class(c, lambda f: f @ W.T + (0 if b is None else b))
        per_class.append(torch.stack([h.mean() for h in hits]))
        accuracy.append(torch.cat(hits).mean())
    train = torch.cat(correct(stream_features)).mean()
    return {"accuracy": torch.stack(accuracy), "per_class": per_class, "train_accuracy": train}


def _fast_head(learner: Any) -> bool:
    """Whether ``learner``'s meta-test is :func:`linear_head_meta_test` on its frozen features:
    a learner with ``frozen_features`` and a linear head trained by cross-entropy."""
    return (
        callable(getattr(learner, "frozen_features", None))
        and type(getattr(learner, "head", None)) is nn.Linear
        and learner.loss_fn is F.cross_entropy
    )


def meta_test_streams(
    learner: Any,
    streams: Sequence[Any],
    lr: float,
    head_reset: str = "zeros",
    train_accuracy: bool = False,
    feature_cache: dict[int, Any] | None = None,
    probe_samples: int = 0,
    probe_groups: int = 5,
) -> dict[str, Any]:
    """Run ``learner.meta_test`` on each stream at ``lr``.

    Returns ``curves`` (tensor ``[runs, n_classes]``: held-out accuracy on all classes seen after
    each class), ``final`` (its last column) and, with ``train_accuracy``, ``train_final``: the
    accuracy on the stream images of all classes after the stream (the papers' train accuracy).
    With ``probe_samples > 0`` also ``probes``: linear probes of the representation after each of
    ``probe_groups`` groups of classes (:mod:`warpgrad.engine.sequential.probes`,
    :func:`~warpgrad.engine.sequential.probes.summarize_probes`); the other results are unchanged.

    A learner with a linear head, cross-entropy and ``frozen_features`` (OML, ANML, ``pretrain``)
    is meta-tested by :func:`linear_head_meta_test` (the same result, faster), its features
    computed once per stream (kept in ``feature_cache`` if given, for several lrs).
    """
    from warpgrad.engine.sequential.probes import StreamProbe, summarize_probes

    if probe_samples > 0 and not _fast_head(learner):
        _check_probe_hook(learner)
    curves, train_final, probed = [], [], []
    for stream in streams:
        train_x = [e.train_x for e in stream]
        test_x = [e.test_x for e in stream]
        labels = [int(e.train_y[0]) for e in stream]
        probe = StreamProbe(stream, probe_samples, probe_groups) if probe_samples > 0 else None
        if _fast_head(learner):
            features = _features(learner, stream, feature_cache)
            head = reset_head(learner.head, head_reset)
            after = None if probe is None else lambda c, h: probe(c, learner.frozen_features, h)
            result = linear_head_meta_test(*features, head["weight"], head.get("bias"), lr, labels, after)
            train_final.append(float(result["train_accuracy"]))
        else:
            hook = {} if probe is None else {"after_class": probe}
            result = learner.meta_test(train_x, test_x, labels=labels, head_reset=head_reset, lr=lr, **hook)
            if train_accuracy:
                again = learner.meta_test(train_x, None, labels=labels, head_reset=head_reset, lr=lr)
                train_final.append(float(again["accuracy"][-1]))
        curves.append(result["accuracy"].double())
        if probe is not None:
            probed.append(probe.result())
    stacked = torch.stack(curves)
    out: dict[str, Any] = {"curves": stacked, "final": stacked[:, -1]}
    if train_accuracy:
        out["train_final"] = torch.tensor(train_final, dtype=torch.float64)
    if probed:
        out["probes"] = summarize_probes(probed, probe.ends)  # type: ignore[union-attr]
    return out


def _check_probe_hook(learner: Any) -> None:
    """Probing needs ``meta_test(..., after_class=...)``; say so rather than fail with a TypeError."""
    parameters = inspect.signature(learner.meta_test).parameters.values()
    if not any(p.name == "after_class" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise UsageError(
            f"{type(learner).__name__}.meta_test takes no after_class hook, so its streams cannot be probed: "
            "run it with probe_samples=0, or give its meta_test an after_class(c, head) argument (see "
            "warpgrad.engine.sequential.probes)"
        )


def _features(learner: Any, stream: Any, cache: dict[int, Any] | None) -> tuple[list[Tensor], list[Tensor]]:
    """The frozen features of a stream's stream and held-out images; with ``cache`` computed once
    per stream (they do not depend on the meta-test lr)."""
    if cache is not None and id(stream) in cache:
        return cache[id(stream)][1:]
    stream_f = [learner.frozen_features(e.train_x) for e in stream]
    held_out_f = [learner.frozen_features(e.test_x) for e in stream]
    if cache is not None:
        cache[id(stream)] = (stream, stream_f, held_out_f)  # the stream is kept so that its id stays unique
    return stream_f, held_out_f


def tune_lr(
    learner: Any, streams: Sequence[Any], grid: Sequence[float], head_reset: str = "zeros"
) -> tuple[float, dict[float, float]]:
    """The lr of ``grid`` with the best mean final held-out accuracy on ``streams`` (the first on
    ties), and that accuracy for every candidate. Give it validation streams only."""
    if not grid:
        raise UsageError("the learning-rate grid is empty")
    cache: dict[int, Any] = {}
    scores = {
        float(lr): float(meta_test_streams(learner, streams, lr, head_reset, feature_cache=cache)["final"].mean())
        for lr in grid
    }
    best = max(scores, key=lambda lr: (scores[lr], -list(scores).index(lr)))
    return best, scores


def parse_lr_grid(text: str) -> list[float]:
    """``"0.01,0.03"`` → ``[0.01, 0.03]`` (positive floats)."""
    try:
        grid = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"lr_grid must be comma-separated numbers, got {text!r}") from None
    if not grid or any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
        raise UsageError(f"lr_grid must hold positive learning rates, got {text!r}")
    return grid


def evaluate(
    learner: Any,
    dataset: Any,
    options: dict[str, Any],
    seed: int,
    streams: dict[tuple[str, int], list[Any]] | None = None,
) -> dict[str, Any]:
    """Tune the meta-test lr on ``val`` streams, then meta-test on ``test`` streams.

    ``streams`` caches the streams by ``(split, seed)`` so that several methods share them.
    Returns ``lr``, ``tuning`` (lr → validation accuracy), ``n_val_classes`` and
    :func:`meta_test_streams`'s result on the test streams (with train accuracy; with the option
    ``probe_samples`` > 0, linear probes after each of ``probe_groups`` groups of test classes:
    never during tuning).
    """
    o = options
    cache = {} if streams is None else streams

    def get(split: str, n_classes: int, seeds: list[int]) -> list[Any]:
        missing = [s for s in seeds if (split, s) not in cache]
        for s, stream in zip(
            missing,
            sequential_streams(dataset, split, n_classes, o["stream_per_class"], o["held_out_per_class"], missing),
        ):
            cache[(split, s)] = stream
        return [cache[(split, s)] for s in seeds]

    n_val = min(o["test_classes"], len(dataset.splits["val"]))
    val = get("val", n_val, [VAL_SEED_OFFSET + seed + r for r in range(o["tune_runs"])])
    lr, tuning = tune_lr(learner, val, parse_lr_grid(o["lr_grid"]), o["head_reset"])
    test = get("test", o["test_classes"], [TEST_SEED_OFFSET + seed + r for r in range(o["runs"])])
    probes = {"probe_samples": o.get("probe_samples", 0), "probe_groups": o.get("probe_groups", 5)}
    result = meta_test_streams(learner, test, lr, o["head_reset"], train_accuracy=True, **probes)
    return {"lr": lr, "tuning": tuning, "n_val_classes": n_val, **result}
