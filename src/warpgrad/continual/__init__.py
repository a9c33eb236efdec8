"""Continual-learning evaluation: metrics on the accuracy matrix and their plots.

Streams live in :mod:`warpgrad.tasks.continual`; methods in :mod:`warpgrad.methods.continual`.
"""

from warpgrad.continual.metrics import (
    accuracy_matrix,
    accuracy_vs_classes,
    average_accuracy,
    backward_transfer,
    forgetting,
    learning_accuracy,
    plot_accuracy_matrix,
    plot_accuracy_vs_classes,
    summarize,
)

__all__ = [
    "accuracy_matrix",
    "average_accuracy",
    "learning_accuracy",
    "forgetting",
    "backward_transfer",
    "summarize",
    "accuracy_vs_classes",
    "plot_accuracy_matrix",
    "plot_accuracy_vs_classes",
]
