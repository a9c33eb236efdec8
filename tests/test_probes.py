"""Linear probes of continual learners' representations (warpgrad.analysis.probes): features are
the penultimate activations, the probe solves separable features, an unchanging learner has no
representational forgetting, a learner whose representation turns to noise drops to chance."""

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from warpgrad.analysis.probes import features, probe_accuracy, probe_matrix, representational_forgetting
from warpgrad.engine.streams import accuracy_matrix_of
from warpgrad.errors import UsageError
from warpgrad.methods.continual import DHPLearner, SGDLearner

D, K = 6, 2


@dataclass
class Exp:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def blobs(seed: int, n: int, k: int = K, d: int = D, spread: float = 0.3, offset: int = 0):
    """``n`` points per class around ``k`` random centres (linearly separable); labels offset..offset+k-1."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(k, d, generator=g)
    y = torch.arange(k).repeat_interleave(n)
    x = centres[y] + spread * torch.randn(len(y), d, generator=g)
    perm = torch.randperm(len(y), generator=g)
    return x[perm], (y + offset)[perm]


def stream(T: int = 3, n_train: int = 60, n_test: int = 100):
    """Class-incremental: experience t has classes 2t, 2t+1 (global labels)."""
    out = []
    for t in range(T):
        x, y = blobs(100 + t, n_train + n_test, offset=K * t)
        idx = torch.arange(len(y))
        tr, te = idx[: K * n_train], idx[K * n_train :]
        out.append(Exp(x[tr], y[tr], x[te], y[te]))
    return out


def mlp(hidden: int = 16, out: int = K * 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, out))


class Frozen(SGDLearner):
    """Never changes: training does nothing."""

    def train_experience(self, x, y, generator, epochs=1, batch_size=32, classes=None):
        return {}


class Noise(nn.Module):
    """Identity until ``noisy``; then fresh Gaussian noise of the input's shape (no information)."""

    def __init__(self) -> None:
        super().__init__()
        self.noisy = False
        self.g = torch.Generator().manual_seed(7)

    def forward(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.g) if self.noisy else x


class Scrambled(SGDLearner):
    """Does not train; its representation becomes noise from the second experience on."""

    def train_experience(self, x, y, generator, epochs=1, batch_size=32, classes=None):
        if self.experiences_seen >= 1:
            self.model[0].noisy = True
        return {}


def test_features_are_the_penultimate_activations():
    torch.manual_seed(0)
    model = mlp()
    learner = SGDLearner(model, lr=0.1)
    x = torch.randn(9, D)
    model.train()
    h = features(learner, x)
    assert torch.allclose(h, model[:-1](x))
    assert h.shape == (9, 16)
    assert model.training  # mode restored
    # batched like in one go
    assert torch.allclose(features(learner, x, batch_size=4), h)


def test_features_use_the_last_linear_layer_called_not_registered():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)  # registered first, called last
            self.body = nn.Linear(D, 4)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    torch.manual_seed(0)
    net = Net()
    x = torch.randn(5, D)
    assert torch.allclose(features(SGDLearner(net, lr=0.1), x), torch.relu(net.body(x)))


def test_features_of_dhp_are_the_input_of_its_plastic_head():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(D, 8), nn.ReLU())
    learner = DHPLearner(body, 8, K, lr=0.1)
    x = torch.randn(7, D)
    assert torch.allclose(features(learner, x), body(x))


def test_features_refuses_learners_without_a_network():
    with pytest.raises(UsageError, match="cannot find the network"):
        features(object(), torch.zeros(2, D))
    with pytest.raises(UsageError, match="no nn.Linear"):
        features(SGDLearner(nn.Sequential(nn.Conv1d(1, 1, 1)), lr=0.1), torch.zeros(2, 1, 3))


def test_probe_solves_linearly_separable_features():
    x, y = blobs(1, 80, k=3, d=5, spread=0.5, offset=4)
    acc = probe_accuracy(x[:60], y[:60], x[60:], y[60:])
    assert acc >= 0.99
    # restricted to two of the classes: examples of the third are dropped
    acc2 = probe_accuracy(x[:60], y[:60], x[60:], y[60:], classes=[4, 6])
    assert acc2 >= 0.99
    # deterministic
    assert probe_accuracy(x[:60], y[:60], x[60:], y[60:]) == acc


def test_probe_on_noise_is_at_chance():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(600, 8, generator=g), torch.randint(0, 2, (600,), generator=g)
    assert abs(probe_accuracy(x[:100], y[:100], x[100:], y[100:]) - 0.5) < 0.1


def test_probe_errors():
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    with pytest.raises(UsageError):
        probe_accuracy(x, y[:5], x, y)
    with pytest.raises(UsageError):
        probe_accuracy(x, y, x, y, classes=[9])
    assert probe_accuracy(x, torch.zeros(10, dtype=torch.long), x, torch.zeros(10, dtype=torch.long)) == 1.0


def test_unchanging_learner_has_no_representational_forgetting():
    torch.manual_seed(0)
    learner = Frozen(mlp(), lr=0.1)
    R, P = probe_matrix(learner, stream(), torch.Generator().manual_seed(0), 1, 16, 5, probe_samples=40)
    assert P.shape == R.shape == (3, 3)
    assert torch.equal(P[0], P[1]) and torch.equal(P[1], P[2])
    assert representational_forgetting(P) == 0.0
    assert P.min() > 0.9  # random tanh features of separable blobs stay separable


def test_noise_representation_loses_the_probe_accuracy():
    torch.manual_seed(0)
    learner = Scrambled(nn.Sequential(Noise(), nn.Linear(D, K * 3)), lr=0.1)
    R, P = probe_matrix(learner, stream(n_test=300), torch.Generator().manual_seed(0), 1, 16, 5, probe_samples=100)
    assert (P[0] > 0.95).all()  # identity features of separable blobs
    assert (P[1:] - 0.5).abs().max() < 0.12  # noise: chance of 2 classes
    # experience 0 loses ~0.5; experience 1 was learned on noise already, so loses ~0
    assert P[0, 0] - P[2, 0] > 0.35
    expected = ((P[0, 0] - P[2, 0]) + (P[1, 1] - P[2, 1])) / 2
    assert representational_forgetting(P) == pytest.approx(float(expected))
    assert representational_forgetting(P) > 0.15


def test_probe_matrix_keeps_accuracy_matrix_of_and_its_generator():
    data = stream(n_train=20, n_test=20)
    torch.manual_seed(1)
    a = SGDLearner(mlp(), lr=0.2)
    torch.manual_seed(1)
    b = SGDLearner(mlp(), lr=0.2)
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    R_plain = accuracy_matrix_of(a, data, ga, 2, 8, 5)
    R, P = probe_matrix(b, data, gb, 2, 8, 5, probe_samples=10)
    assert torch.equal(R, R_plain)
    assert torch.equal(ga.get_state(), gb.get_state())
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert ((P >= 0) & (P <= 1)).all()


def test_representational_forgetting_is_best_earlier_minus_final():
    P = torch.tensor([[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.5, 0.6, 0.9]])
    assert representational_forgetting(P) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.6)) / 2)
    assert representational_forgetting([[0.4]]) == 0.0


def test_features_of_oml_are_its_representation():
    from warpgrad.methods.continual import OML

    torch.manual_seed(0)
    rln = nn.Sequential(nn.Linear(D, 8), nn.ReLU())
    learner = OML(rln, nn.Linear(8, K))
    x = torch.randn(5, D)
    assert torch.allclose(features(learner, x), rln(x))


def test_stream_runner_records_representational_forgetting_when_asked(tmp_path):

    from warpgrad import experiments
    from warpgrad.engine.streams import run_streams

    exp = experiments.get_experiment("digits-permuted")
    base = exp.profile("smoke").with_overrides({"runs": "1", "experiences": "2"})
    plain = run_streams(exp, ["sgd"], base, 0, tmp_path / "plain", progress=False)["methods"]["sgd"]
    assert "probe_matrix" not in plain and "representational_forgetting" not in plain["extra"]
    probed = base.with_overrides({"probe_samples": "30"})  # the option every stream profile has
    entry = run_streams(exp, ["sgd"], probed, 0, tmp_path / "probed", progress=False)["methods"]["sgd"]
    assert entry["accuracy_matrix"] == plain["accuracy_matrix"]  # R unchanged by the probes
    P = torch.tensor(entry["probe_matrix"], dtype=torch.float64)
    assert P.shape == (2, 2) and ((P >= 0) & (P <= 1)).all()
    assert entry["extra"]["representational_forgetting"]["mean"] == pytest.approx(float(P[0, 0] - P[1, 0]))
    assert (tmp_path / "probed" / "probe_matrix_sgd.png").stat().st_size > 1000
    assert not (tmp_path / "plain" / "probe_matrix_sgd.png").exists()
