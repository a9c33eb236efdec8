"""The stream runner: accuracy matrix against a hand-known learner; the CLI path end to end."""

import json
from dataclasses import dataclass

import torch
from torch import Tensor

from warpgrad.cli import main
from warpgrad.engine.streams import accuracy_matrix_of


@dataclass
class Exp:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


class Memoriser:
    """Predicts correctly exactly the experiences whose marker it has trained on; forgets all but
    the last ``memory`` of them. Its accuracy matrix is known by hand."""

    def __init__(self, memory):
        self.memory, self.seen, self.ends = memory, [], 0

    def train_experience(self, x, y, generator, epochs, batch_size):
        self.seen = (self.seen + [int(x[0, 0])])[-self.memory :]

    def end_experience(self, x, y, generator):
        self.ends += 1

    def predict(self, x):
        known = torch.tensor([int(v) in self.seen for v in x[:, 0]])
        label = x[:, 1].long()
        return torch.nn.functional.one_hot(torch.where(known, label, (label + 1) % 3), 3).float()


def stream(n=3):
    out = []
    for e in range(n):
        x = torch.tensor([[float(e), float(i % 3)] for i in range(6)])
        out.append(Exp(x, x[:, 1].long(), x, x[:, 1].long()))
    return out


def test_accuracy_matrix_rows_are_accuracies_after_each_experience():
    learner = Memoriser(memory=2)
    R = accuracy_matrix_of(learner, stream(), torch.Generator(), epochs=1, batch_size=4, fisher_samples=2)
    expected = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(R, expected)
    assert learner.ends == 3


def test_stream_experiment_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "dp"
    code = main(
        ["run", "digits-permuted", "--profile", "smoke", "--method", "sgd,ewc", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for method in ("sgd", "ewc"):
        entry = results["methods"][method]
        assert entry["metric"] == "average_accuracy" and entry["n_tasks"] == 2 and entry["steps"] == 3
        R = torch.tensor(entry["accuracy_matrix"], dtype=torch.float64)
        assert R.shape == (3, 3) and abs(float(R[-1].mean()) - entry["mean"]) < 1e-9  # mean over runs is linear
        assert set(entry["extra"]) == {"forgetting", "backward_transfer", "learning_accuracy"}
        assert (out / f"accuracy_matrix_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["run", "digits-permuted", "--profile", "smoke", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]
