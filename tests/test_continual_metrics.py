"""Continual-learning metrics against hand-worked examples, and the plots."""

import math

import pytest
import torch

from warpgrad.continual import (
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

# R[i, j]: accuracy on experience j after training on experiences 0..i.
R3 = [
    [0.90, 0.10, 0.20],
    [0.95, 0.80, 0.30],
    [0.60, 0.50, 0.95],
]


def test_hand_worked_3x3():
    # average accuracy: last row mean = (0.60 + 0.50 + 0.95) / 3 = 2.05 / 3 = 0.68333...
    assert average_accuracy(R3) == pytest.approx(2.05 / 3)
    # learning accuracy: diagonal mean = (0.90 + 0.80 + 0.95) / 3 = 2.65 / 3 = 0.88333...
    assert learning_accuracy(R3) == pytest.approx(2.65 / 3)
    # forgetting: j=0: max(R00, R10) - R20 = max(0.90, 0.95) - 0.60 = 0.35  (the max is NOT the diagonal)
    #             j=1: max(R11)      - R21 = 0.80 - 0.50            = 0.30
    #             mean = 0.325
    assert forgetting(R3) == pytest.approx(0.325)
    # backward transfer: j=0: R20 - R00 = 0.60 - 0.90 = -0.30; j=1: R21 - R11 = 0.50 - 0.80 = -0.30
    #                    mean = -0.30
    assert backward_transfer(R3) == pytest.approx(-0.30)


def test_hand_worked_positive_transfer():
    R = [
        [0.5, 0.0, 0.0],
        [0.4, 0.7, 0.0],
        [0.8, 0.6, 0.9],
    ]
    # forgetting: j=0: max(0.5, 0.4) - 0.8 = -0.3 (the last row is not part of the max);
    #             j=1: 0.7 - 0.6 = 0.1; mean = -0.1
    assert forgetting(R) == pytest.approx(-0.1)
    # BWT: (0.8 - 0.5 + 0.6 - 0.7) / 2 = 0.1
    assert backward_transfer(R) == pytest.approx(0.1)
    assert average_accuracy(R) == pytest.approx((0.8 + 0.6 + 0.9) / 3)
    assert learning_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_single_experience():
    R = [[0.7]]
    assert average_accuracy(R) == pytest.approx(0.7)
    assert learning_accuracy(R) == pytest.approx(0.7)
    assert forgetting(R) == 0.0  # documented: nothing earlier to forget
    assert backward_transfer(R) == 0.0


def test_tensor_input_and_validation():
    R = torch.tensor(R3, dtype=torch.float32)
    assert forgetting(R) == pytest.approx(0.325, abs=1e-6)
    assert accuracy_matrix(R).dtype == torch.float64
    for bad in ([[0.1, 0.2]], [0.5], [], [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]):
        with pytest.raises(ValueError, match="square"):
            average_accuracy(bad)


def test_summarize_is_json_ready():
    import json

    s = summarize(R3)
    assert s["n_experiences"] == 3
    assert s["forgetting"] == pytest.approx(0.325)
    assert s["backward_transfer"] == pytest.approx(-0.3)
    assert s["average_accuracy"] == pytest.approx(2.05 / 3)
    assert s["learning_accuracy"] == pytest.approx(2.65 / 3)
    assert s["final_accuracies"] == pytest.approx([0.6, 0.5, 0.95])
    json.dumps(s)


def test_accuracy_vs_classes():
    # equal weights: after 1 class R00 = 0.9; after 2: (0.95 + 0.80) / 2; after 3: (0.6 + 0.5 + 0.95) / 3
    curve = accuracy_vs_classes(R3)
    assert [n for n, _ in curve] == [1, 2, 3]
    assert [a for _, a in curve] == pytest.approx([0.9, 0.875, 2.05 / 3])
    # weighted by test images per class [1, 1, 2]: after 3: (0.6 + 0.5 + 2 * 0.95) / 4 = 0.75
    assert accuracy_vs_classes(R3, test_counts=[1, 1, 2])[-1][1] == pytest.approx(0.75)
    # only some rows evaluated: the others may be NaN
    R = torch.tensor(R3)
    R[1] = math.nan
    assert accuracy_vs_classes(R, at=[1, 3]) == [(1, pytest.approx(0.9)), (3, pytest.approx(2.05 / 3))]
    with pytest.raises(ValueError, match="NaN"):
        accuracy_vs_classes(R)
    with pytest.raises(ValueError, match="outside"):
        accuracy_vs_classes(R3, at=[4])


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots(tmp_path):
    matrix = tmp_path / "sub" / "matrix.png"
    plot_accuracy_matrix(R3, matrix, title="toy")
    curves = tmp_path / "curves.png"
    plot_accuracy_vs_classes({"sgd": [(1, 0.9), (2, 0.5)], "anml": accuracy_vs_classes(R3)}, curves)
    assert _is_png(matrix) and _is_png(curves)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["curves.png", "matrix.png"]
    with pytest.raises(ValueError, match="empty"):
        plot_accuracy_vs_classes({}, tmp_path / "none.png")


def test_plot_of_output_and_probe_curves(tmp_path):
    from warpgrad.continual.metrics import plot_output_and_probe_curves

    path = tmp_path / "probes.png"
    plot_output_and_probe_curves({"sgd": ([(1, 0.9), (2, 0.5), (3, 0.4)], [(1, 0.95), (3, 0.8)])}, path, "toy")
    assert _is_png(path)
    with pytest.raises(ValueError, match="empty"):
        plot_output_and_probe_curves({}, tmp_path / "none.png")
    with pytest.raises(ValueError, match="'oml' needs output and probe points"):
        plot_output_and_probe_curves({"oml": ([(1, 0.9)], [])}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
