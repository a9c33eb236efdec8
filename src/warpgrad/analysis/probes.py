"""Linear probes of a continual learner's representation: representational forgetting.

A network that forgets a task may keep a representation from which a new output layer, fitted on
a few labelled examples, still solves it: the loss is then in the output layer, which is cheap to
re-fit, not in the representation. Following Xiong, Ren & Urtasun ("Learning to Remember from a
Multi-Task Teacher", arXiv:1910.04650), forgetting is also measured on the representation:

- :func:`features`: the representation of a learner, the input of its final linear layer (the
  penultimate activations);
- :func:`probe_accuracy`: a linear probe (multinomial logistic regression on standardised
  features, small L2 penalty, fitted by full-batch L-BFGS; deterministic) fitted on a small
  labelled sample and scored on a test set;
- :func:`probe_matrix`: the schedule of :func:`~warpgrad.engine.streams.accuracy_matrix_of`
  (R unchanged) plus ``P[i, j]``, the probe accuracy on experience ``j`` of the representation
  after training on experience ``i``;
- :func:`representational_forgetting`: the usual average forgetting (Chaudhry et al. 2018, see
  :func:`warpgrad.continual.metrics.forgetting`) of ``P`` instead of ``R``.

The probe sample of each experience (``probe_samples`` training examples) is drawn once from its
own generator, so every row of ``P`` probes the same examples and
``R`` is exactly what :func:`~warpgrad.engine.streams.accuracy_matrix_of` returns for the same
``generator``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.continual.metrics import accuracy_matrix, forgetting
from warpgrad.engine.streams import accuracy_matrix_of
from warpgrad.errors import UsageError

__all__ = ["features", "probe_accuracy", "probe_matrix", "representational_forgetting"]


def _output_layer_types() -> tuple[type[nn.Module], ...]:
    """Modules that count as a final linear layer: ``nn.Linear`` and DHP's plastic softmax layer
    (linear in its input: ``h (W + α ⊙ Hebb)ᵀ + b``)."""
    from warpgrad.methods.continual.dhp import DHPSoftmax

    return (nn.Linear, DHPSoftmax)


@torch.no_grad()
def _hooked_features(model: nn.Module, x: Tensor) -> Tensor:
    """Input of the last output layer (:func:`_output_layer_types`) *called* in ``model(x)``."""
    layers = [m for m in model.modules() if isinstance(m, _output_layer_types())]
    if not layers:
        raise UsageError(f"features: {type(model).__name__} has no nn.Linear (or DHPSoftmax) layer to probe")
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured.append(inputs[0])

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not captured:
        raise UsageError(f"features: no linear layer of {type(model).__name__} was called in its forward pass")
    return captured[-1]


@torch.no_grad()
def features(learner: Any, x: Tensor, batch_size: int = 1024) -> Tensor:
    """The representation of ``x``: the input of ``learner``'s final linear layer, ``[n, d]``, detached.

    - stream learners (:class:`~warpgrad.methods.continual.base.ContinualLearner`: SGD, EWC, DHP,
      or any object whose ``model`` is an ``nn.Module`` mapping ``x`` to logits): a forward
      pre-hook on every ``nn.Linear`` (and DHP's :class:`~warpgrad.methods.continual.dhp.DHPSoftmax`)
      of ``learner.model``, in eval mode; the input of the last one *called* is returned (the last
      in execution order, not in registration order);
    - OML / ANML (:class:`~warpgrad.methods.continual.oml.TrajectoryMetaLearner`): their
      ``frozen_features`` (the head's input: the RLN's output; ANML's masked features).

    The model's train/eval mode is restored afterwards.

    Raises:
        UsageError: for :class:`~warpgrad.methods.continual.warpgrad.ContinualWarpGrad` (it holds
            θ₀ and the warps, not the task parameters trained through a sequence), for a learner
            with no ``model`` module, or a model with no linear layer called in its forward pass.
    """
    from warpgrad.methods.continual.oml import TrajectoryMetaLearner
    from warpgrad.methods.continual.warpgrad import ContinualWarpGrad

    if isinstance(learner, ContinualWarpGrad):
        raise UsageError(
            "features: ContinualWarpGrad keeps θ₀ and its warps, not the task parameters trained through a "
            "sequence (train_sequence returns them); probe functional_apply(model, θ, x) yourself"
        )
    if isinstance(learner, TrajectoryMetaLearner):
        run = learner.frozen_features
    elif isinstance(getattr(learner, "model", None), nn.Module):
        model = learner.model

        def run(xb: Tensor) -> Tensor:
            return _hooked_features(model, xb)

    else:
        raise UsageError(
            f"features: cannot find the network of {type(learner).__name__}: expected a `model` attribute "
            "holding an nn.Module (a ContinualLearner), or an OML/ANML learner"
        )
    if x.shape[0] == 0:
        raise UsageError("features: x has no examples")
    chunks = [run(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)]
    return torch.cat([c.detach().flatten(1) for c in chunks])


def probe_accuracy(
    train_features: Tensor,
    train_y: Tensor,
    test_features: Tensor,
    test_y: Tensor,
    classes: Sequence[int] | None = None,
    l2: float = 1e-3,
    steps: int = 200,
) -> float:
    """Test accuracy of a linear probe fitted on ``(train_features, train_y)``.

    Multinomial logistic regression on features standardised by the training sample's mean and
    standard deviation (a feature constant on it is only centred), in float64, minimising
    ``mean cross-entropy + l2 · ||W||²`` (bias not penalised) by full-batch L-BFGS (strong-Wolfe
    line search, at most ``steps`` iterations) from zero: deterministic.

    ``classes``: the labels the probe tells apart; examples (train and test) with other labels are
    dropped. ``None``: every label in ``train_y`` or ``test_y`` (a test label absent from the
    training sample is never predicted, so counts as an error). A single class scores 1.

    Raises:
        UsageError: on mismatched shapes, an empty training or test set (after ``classes``), or
            bad ``l2`` / ``steps``.
    """
    if l2 < 0 or steps < 1:
        raise UsageError(f"probe_accuracy: l2 must be >= 0 and steps >= 1, got {l2}, {steps}")
    xtr = torch.as_tensor(train_features).detach().to(torch.float64).flatten(1)
    xte = torch.as_tensor(test_features).detach().to(torch.float64).flatten(1)
    ytr = torch.as_tensor(train_y).detach().long().flatten()
    yte = torch.as_tensor(test_y).detach().long().flatten()
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0] or xtr.shape[1] != xte.shape[1]:
        raise UsageError(
            f"probe_accuracy: shapes do not match: train {tuple(xtr.shape)} / {tuple(ytr.shape)}, "
            f"test {tuple(xte.shape)} / {tuple(yte.shape)}"
        )
    if classes is None:
        labels = torch.unique(torch.cat([ytr, yte]))
    else:
        labels = torch.as_tensor(list(classes), dtype=torch.long).flatten()
        if labels.numel() == 0 or torch.unique(labels).numel() != labels.numel():
            raise UsageError(f"probe_accuracy: classes must be distinct labels, got {labels.tolist()}")
        keep_tr, keep_te = torch.isin(ytr, labels), torch.isin(yte, labels)
        xtr, ytr, xte, yte = xtr[keep_tr], ytr[keep_tr], xte[keep_te], yte[keep_te]
    if xtr.shape[0] == 0 or xte.shape[0] == 0:
        raise UsageError(
            f"probe_accuracy: {xtr.shape[0]} training and {xte.shape[0]} test examples (of classes "
            f"{labels.tolist()}); both must be non-empty"
        )
    k = labels.numel()
    if k == 1:
        return 1.0
    # labels -> positions 0..k-1
    ytr = (ytr.unsqueeze(1) == labels.unsqueeze(0)).long().argmax(1)
    yte = (yte.unsqueeze(1) == labels.unsqueeze(0)).long().argmax(1)
    mean = xtr.mean(0)
    std = xtr.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    xtr, xte = (xtr - mean) / std, (xte - mean) / std

    weight = torch.zeros(k, xtr.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(xtr @ weight.T + bias, ytr) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (xte @ weight.T + bias).argmax(1)
    return float((predicted == yte).double().mean())


def probe_matrix(
    learner: Any,
    stream: Any,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
    fisher_samples: int,
    probe_samples: int = 100,
    probe_generator: torch.Generator | None = None,
    name: str = "the learner",
) -> tuple[Tensor, Tensor]:
    """Train ``learner`` through ``stream`` as :func:`~warpgrad.engine.streams.accuracy_matrix_of`
    does; return ``(R, P)``.

    ``R`` is exactly ``accuracy_matrix_of``'s (same ``generator`` draws). ``P[i, j]`` is the
    :func:`probe_accuracy` on experience ``j``'s test set of a probe fitted on ``probe_samples``
    training examples of experience ``j`` (all of them if fewer), using :func:`features` of the
    learner after training on experience ``i``. The probe samples are drawn once from
    ``probe_generator`` (default: a generator seeded with 0), the same for every row. The probe
    tells apart the labels present in experience ``j`` (positions in its ``classes`` in a
    task-incremental stream; its own global labels otherwise). ``P[i, j]`` for ``i < j`` probes a
    representation that has not seen experience ``j`` yet (forward transfer of the representation).

    Raises:
        UsageError: if ``probe_samples < 1``, or as :func:`features` and :func:`probe_accuracy`.
        TrainingDiverged: as ``accuracy_matrix_of``.
    """
    if probe_samples < 1:
        raise UsageError(f"probe_samples must be >= 1, got {probe_samples}")
    if probe_generator is None:
        probe_generator = torch.Generator().manual_seed(0)
    samples: list[Tensor] = []
    rows: list[list[float]] = []

    def probe(i: int, experiences: list[Any]) -> None:
        if not samples:  # drawn once (after experience 0; only probe_generator is used), same for every row
            samples.extend(
                torch.randperm(e.train_x.shape[0], generator=probe_generator)[:probe_samples] for e in experiences
            )
        rows.append(
            [
                probe_accuracy(
                    features(learner, e.train_x[index]), e.train_y[index], features(learner, e.test_x), e.test_y
                )
                for e, index in zip(experiences, samples)
            ]
        )

    R = accuracy_matrix_of(learner, stream, generator, epochs, batch_size, fisher_samples, name, after_experience=probe)
    return R, torch.tensor(rows, dtype=torch.float64)


def representational_forgetting(P: Tensor | Sequence[Sequence[float]]) -> float:
    """Average forgetting of the probe matrix: ``1/(T−1) Σ_{j<T−1} (max_{i ∈ j..T−2} P[i, j] − P[T−1, j])``.

    The drop from the best probe accuracy experience ``j`` had after it was learned (and before
    the last experience) to its probe accuracy at the end of the stream; 0 when ``T = 1``. It is
    :func:`warpgrad.continual.metrics.forgetting` applied to ``P``: comparing it with the forgetting
    of ``R`` separates what is lost in the representation from what a re-fitted output layer
    recovers (Xiong, Ren & Urtasun, arXiv:1910.04650).
    """
    return forgetting(accuracy_matrix(P))
