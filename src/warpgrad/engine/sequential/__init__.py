"""The OML/ANML meta-test protocol: meta-train on sampled trajectories, learn new classes online.

Protocol (Javed & White 2019, arXiv:1905.12588; Beaulieu et al. 2020, arXiv:2002.09571), as run
by ``warpgrad run kanji-sequential`` / ``omniglot-sequential``:

* **Meta-training**, on the dataset's ``train`` classes only (``meta_classes`` of them, a subset
  drawn with the run seed; label = position in that subset, in a label space of ``outputs``
  head units). Each meta-step draws one class, a *trajectory* of ``trajectory`` of its images in
  random order (ANML: all 20 images of one Omniglot character) and a *remember* batch of
  ``remember`` images of uniformly drawn meta-training classes (64 in ANML), from an explicit
  ``torch.Generator`` seeded with the run seed (:class:`TrajectorySampler`), and hands them to
  ``learner.meta_step``. With ``reset_class_row`` the head's output row of the trajectory class
  is zeroed before the step, as both papers' code re-initialises it, so that the inner loop learns
  the class from scratch like the meta-test does.
* **Meta-test**, on ``test`` classes: for each of ``runs`` streams (seeds ``2_000_000 + seed + r``,
  the same for every method), ``test_classes`` classes in random order, each split into
  ``stream_per_class`` images to learn from and ``held_out_per_class`` held-out images. The head
  is reset (``head_reset``, zeros as in the papers) and trained one SGD step per image, one pass,
  class after class; after each class the accuracy on the held-out images of all classes seen so
  far gives the curve. The metric is the final held-out accuracy (after all classes), mean ± 95% CI
  over runs; the papers' "train accuracy" (on the stream images, after the stream) is recorded
  under ``extra``.
* **Learning rate**: the meta-test SGD learning rate of every method is chosen from ``lr_grid`` by
  the mean final held-out accuracy on ``tune_runs`` streams of ``val`` classes (seeds
  ``1_000_000 + seed + r``; ``min(test_classes, |val|)`` classes each) — never test classes. The
  chosen lr and the validation accuracy of every candidate are recorded.

Methods: ``oml``, ``anml`` (the meta-learners of :mod:`warpgrad.methods.continual`), and two
baselines on the same streams: ``sgd`` (:class:`Scratch`: the OML architecture randomly
initialised, the whole network trained online) and ``pretrain`` (:class:`Pretrain`: the OML
architecture trained by Adam on the meta-training samples, trajectory and remember images pooled
into one mini-batch, for as many steps as meta-training; then frozen features, head reset and
trained online like OML).

A linear head on frozen features (OML, ANML, ``pretrain``) is meta-tested with the gradient in
closed form (:func:`linear_head_meta_test`, equal to the library's ``continual_meta_test``) on
features computed once per stream. The profile option ``threads`` sets torch's intra-op threads
for the run (0: unchanged); the one-image steps of ``sgd`` always run on one thread.

Representational forgetting (opt-in, ``probe_samples`` > 0): linear probes of each learner's
current representation after each of ``probe_groups`` groups of test classes, next to the output
accuracy at the same points (:mod:`warpgrad.engine.sequential.probes`).

Outputs: ``results.json`` (entries with the mean curve ``curve``, ``lr``, ``extra``) and
``accuracy_vs_classes.png`` (mean curve per method) in the output directory. Runs are minutes
and have no checkpoints (``--resume`` is refused by the CLI).

References:
    Javed, White. Meta-Learning Representations for Continual Learning. NeurIPS 2019.
    arXiv:1905.12588.
    Beaulieu, Frati, Miconi, Lehman, Stanley, Clune, Cheney. Learning to Continually Learn.
    ECAI 2020. arXiv:2002.09571.
"""

from __future__ import annotations

from warpgrad.engine.sequential.baselines import Pretrain, Scratch, online_network_meta_test
from warpgrad.engine.sequential.meta_test import (
    TEST_SEED_OFFSET,
    VAL_SEED_OFFSET,
    evaluate,
    linear_head_meta_test,
    meta_test_streams,
    parse_lr_grid,
    sequential_streams,
    tune_lr,
)
from warpgrad.engine.sequential.runner import PLOT_FILE, meta_train, meta_train_classes, outputs, plot, run, table
from warpgrad.engine.sequential.sampling import TrajectorySampler

__all__ = [
    "TrajectorySampler",
    "Scratch",
    "Pretrain",
    "online_network_meta_test",
    "meta_train",
    "meta_test_streams",
    "linear_head_meta_test",
    "sequential_streams",
    "meta_train_classes",
    "plot",
    "evaluate",
    "tune_lr",
    "parse_lr_grid",
    "run",
    "table",
    "outputs",
    "PLOT_FILE",
    "VAL_SEED_OFFSET",
    "TEST_SEED_OFFSET",
]
