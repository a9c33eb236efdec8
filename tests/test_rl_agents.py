"""The maze agents and A2C against hand computations (float64), and the two timescales."""

import copy

import pytest
import torch
from torch.nn import functional as F

from warpgrad.methods.rl import (
    A2C,
    A2CLoss,
    A2CUpdates,
    Backpropamine,
    HebbianRNN,
    RNNAgent,
    Rollout,
    WarpRNN,
    a2c_loss,
    discounted_returns,
    partition,
    run_episode,
)
from warpgrad.tasks.rl import Maze


@pytest.fixture(autouse=True)
def _float64():
    """The hand computations below are exact to 1e-12 in float64 (tests that need float32 set it)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _randomise(agent, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return agent


def _lstm_by_hand(cell, x, z, c):
    """torch's LSTMCell equations written out: gates i, f, g, o in that order."""
    pre = x @ cell.weight_ih.T + cell.bias_ih + z @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = pre.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_warp_rnn_step_is_the_equation_written_out():
    agent = _randomise(WarpRNN(5, 4, hidden_size=6, warp_size=3))
    x, h, z, c = (torch.randn(2, n) for n in (5, 6, 3, 3))
    logits, value, (h1, z1, c1) = agent(x, (h, z, c))

    z_hand, c_hand = _lstm_by_hand(agent.warp, torch.cat([x, h], 1), z, c)
    pi = torch.tanh(z_hand @ agent.project.weight.T)
    pi_x, pi_h, pi_i, pi_r, pi_b = pi[:, :5], pi[:, 5:11], pi[:, 11:17], pi[:, 17:23], pi[:, 23:29]
    assert pi.shape[1] == 29  # 5 + 4 * 6: no unused gates
    h_hand = torch.tanh(
        pi_i * ((pi_x * x) @ agent.weight_ih.T) + pi_r * ((pi_h * h) @ agent.weight_hh.T) + pi_b * agent.bias
    )
    torch.testing.assert_close(z1, z_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(c1, c_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(h1, h_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, h_hand @ agent.policy.weight.T + agent.policy.bias, rtol=0, atol=1e-12)
    torch.testing.assert_close(value, (h_hand @ agent.value.weight.T + agent.value.bias)[:, 0], rtol=0, atol=1e-12)


def test_warp_rnn_partition_and_reference_sizes():
    agent = WarpRNN(17, 4, 100, 100)
    task, meta = partition(agent)
    assert sorted(meta) == ["project.weight", "warp.bias_hh", "warp.bias_ih", "warp.weight_hh", "warp.weight_ih"]
    assert sum(p.numel() for p in task.values()) == 1_700 + 10_000 + 100 + 505  # θ of the reference
    assert sum(p.numel() for p in meta.values()) == 87_600 + 41_700  # its LSTM cell and the 417 used gates
    assert torch.allclose(agent.weight_hh @ agent.weight_hh.T, torch.eye(100), atol=1e-10)  # orthogonal init
    assert not agent.bias.any()
    for cls in (RNNAgent, HebbianRNN, Backpropamine):
        assert partition(cls(17, 4, 8))[1] == {}  # baselines: everything is θ


def test_rnn_step_by_hand():
    agent = _randomise(RNNAgent(5, 4, 6))
    x, h = torch.randn(3, 5), torch.randn(3, 6)
    _, _, (h1,) = agent(x, (h,))
    expected = torch.tanh(x @ agent.input.weight.T + agent.input.bias + h @ agent.recurrent.T)
    torch.testing.assert_close(h1, expected, rtol=0, atol=1e-12)


def _plastic_by_hand(agent, x, h, hebb, rate):
    """Per environment, with explicit loops: the new activity and the clamped additive trace."""
    out_h, out_hebb = [], []
    for b in range(x.shape[0]):
        w = agent.recurrent + agent.plasticity * hebb[b]
        new_h = torch.tanh(agent.input.weight @ x[b] + agent.input.bias + w @ h[b])
        m = rate(new_h)
        trace = hebb[b].clone()
        for i in range(new_h.shape[0]):
            for j in range(h.shape[1]):
                trace[i, j] = min(1.0, max(-1.0, float((trace[i, j] + m * new_h[i] * h[b, j]).detach())))
        out_h.append(new_h)
        out_hebb.append(trace)
    return torch.stack(out_h), torch.stack(out_hebb)


@pytest.mark.parametrize("cls", [HebbianRNN, Backpropamine])
def test_plastic_updates_by_hand(cls):
    agent = _randomise(cls(5, 4, 6), seed=1)
    with torch.no_grad():
        agent.plasticity.mul_(3.0)
    x, h = torch.randn(2, 5), torch.randn(2, 6)
    hebb = torch.rand(2, 6, 6) * 1.8 - 0.9  # near the clamp, so some entries hit ±1
    if cls is HebbianRNN:
        with torch.no_grad():
            agent.eta.fill_(0.7)

        def rate(new_h):
            return float(agent.eta.detach())
    else:

        def rate(new_h):
            return float(torch.tanh(agent.modulator.weight[0] @ new_h + agent.modulator.bias[0]))

    _, _, (h1, hebb1) = agent(x, (h, hebb))
    h_hand, hebb_hand = _plastic_by_hand(agent, x, h, hebb, rate)
    torch.testing.assert_close(h1, h_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(hebb1, hebb_hand, rtol=0, atol=1e-12)
    assert (hebb1.abs() == 1).any(), "the clamp was not exercised"


def test_backpropamine_rate_differs_per_environment_and_can_be_negative():
    agent = _randomise(Backpropamine(5, 4, 6), seed=2)
    rates = agent.rate(torch.randn(8, 6))
    assert rates.shape == (8, 1) and rates.std() > 0 and (rates < 0).any()


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 10.0], [2.0, 0.0]])
    expected = torch.tensor([[1 + 0.9**2 * 2, 0.9 * 10], [0.9 * 2, 10.0], [2.0, 0.0]])
    torch.testing.assert_close(discounted_returns(rewards, 0.9), expected)


def _fixed_rollout(T=4, B=3, A=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, B, A, generator=g, requires_grad=True)
    values = torch.randn(T, B, generator=g, requires_grad=True)
    actions = torch.randint(A, (T, B), generator=g)
    rewards = (torch.rand(T, B, generator=g) < 0.3).double() * 10
    return Rollout(logits, values, actions, rewards)


@pytest.mark.parametrize("baseline", ["per-env", "first-env"])
@pytest.mark.parametrize("regulariser", ["sum-p2", "entropy"])
def test_a2c_loss_is_the_hand_formula(baseline, regulariser):
    r = _fixed_rollout()
    T, B, A = r.logits.shape
    config = A2CLoss(gamma=0.9, value_coef=0.1, regulariser=regulariser, regulariser_coef=0.03, value_baseline=baseline)
    loss, parts = a2c_loss(r, config)
    total = 0.0
    for t in range(T):
        for b in range(B):
            R = sum(0.9 ** (k - t) * float(r.rewards[k, b]) for k in range(t, T))
            v = float(r.values[t, 0 if baseline == "first-env" else b])
            p = F.softmax(r.logits[t, b].detach(), -1)
            penalty = float((p * p).sum()) if regulariser == "sum-p2" else float((p * p.log()).sum())
            total += -float(p[r.actions[t, b]].log()) * (R - v) + 0.1 * (R - v) ** 2 + 0.03 * penalty
    assert float(loss) == pytest.approx(total / (T * B), rel=1e-12)
    # the policy term does not reach the values: dL/dV = -2 c_v A / (T B), on element 0 only with "first-env"
    loss.backward()
    returns = discounted_returns(r.rewards, 0.9)
    if baseline == "per-env":
        expected = -2 * 0.1 * (returns - r.values.detach()) / (T * B)
    else:
        expected = torch.zeros(T, B)
        expected[:, 0] = (-2 * 0.1 * (returns - r.values.detach()[:, :1]) / (T * B)).sum(1)
    torch.testing.assert_close(r.values.grad, expected, rtol=1e-10, atol=1e-12)


def test_a2c_options_are_checked():
    for bad in ({"regulariser": "l2"}, {"value_baseline": "mean"}, {"gamma": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            A2CLoss(**bad)
    with pytest.raises(ValueError, match="lr"):
        A2CUpdates(lr=0.0)


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, after):
    return any(not torch.equal(a, b) for a, b in zip(before, after))


def test_two_timescales_theta_every_episode_phi_every_meta_every_on_the_summed_gradient():
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    agent = WarpRNN(17, 4, hidden_size=8, warp_size=5)
    maze = Maze(7, batch=3, episode_length=12)
    trainer = A2C(agent, A2CLoss(), A2CUpdates(lr=1e-2, meta_lr=1e-2, meta_every=3, burn_in=2))
    actions = torch.Generator().manual_seed(1)
    summed = None
    for episode in range(11):
        theta, phi = _snapshot(trainer.task_parameters), _snapshot(trainer.meta_parameters)
        twin, maze_seed, action_state = copy.deepcopy(agent), 100 + episode, actions.get_state()
        trainer.train_episode(maze, torch.Generator().manual_seed(maze_seed), actions)
        learning = episode >= 2
        meta_step = learning and (episode - 2 + 1) % 3 == 0
        assert _changed(theta, trainer.task_parameters) == learning, episode
        assert _changed(phi, trainer.meta_parameters) == meta_step, episode
        if learning:  # φ's gradient of this episode's loss, computed independently on a copy of the agent
            twin_actions = torch.Generator()
            twin_actions.set_state(action_state)
            rollout = run_episode(twin, maze, torch.Generator().manual_seed(maze_seed), twin_actions)
            twin_phi = list(partition(twin)[1].values())
            grads = torch.autograd.grad(a2c_loss(rollout, A2CLoss())[0], twin_phi)
            summed = list(grads) if summed is None else [s + g for s, g in zip(summed, grads)]
            if not meta_step:  # before its step, φ holds the sum over the episodes since its last one
                for p, s in zip(trainer.meta_parameters, summed):
                    torch.testing.assert_close(p.grad, s, rtol=1e-4, atol=1e-6)
            else:
                summed = None
                assert all(p.grad is None for p in trainer.meta_parameters)


def test_resumed_trainer_state_continues_identically():
    torch.set_default_dtype(torch.float32)

    def trainer_and_generator():
        torch.manual_seed(3)
        agent = WarpRNN(17, 4, hidden_size=8, warp_size=5)
        return A2C(agent, A2CLoss(), A2CUpdates(meta_every=3)), torch.Generator().manual_seed(4)

    maze = Maze(7, batch=2, episode_length=10)
    straight, g = trainer_and_generator()
    for e in range(5):
        straight.train_episode(maze, torch.Generator().manual_seed(e), g)
    first, g1 = trainer_and_generator()
    for e in range(2):  # stop mid-block: φ's accumulated gradient must survive
        first.train_episode(maze, torch.Generator().manual_seed(e), g1)
    saved, generator_state = copy.deepcopy(first.state_dict()), g1.get_state()
    resumed, g2 = trainer_and_generator()
    resumed.load_state_dict(saved)
    g2.set_state(generator_state)
    for e in range(2, 5):
        resumed.train_episode(maze, torch.Generator().manual_seed(e), g2)
    for a, b in zip(straight.agent.state_dict().values(), resumed.agent.state_dict().values()):
        assert torch.equal(a, b)


def test_a_users_own_agent_trains_with_a2c_and_its_meta_module_on_the_slow_timescale():
    """The extension point of docs/rl.md: a RecurrentAgent subclass naming its slow modules in META."""
    torch.set_default_dtype(torch.float32)
    from torch import nn

    from warpgrad.methods.rl import RecurrentAgent
    from warpgrad.tasks.rl import N_ACTIONS, OBSERVATION_SIZE

    class GatedGRU(RecurrentAgent):
        META = ("gate",)

        def __init__(self, observation_size, n_actions, hidden_size):
            super().__init__(observation_size, n_actions, hidden_size)
            self.cell = nn.GRUCell(observation_size, hidden_size)
            self.gate = nn.Linear(observation_size, hidden_size)

        def initial_state(self, batch):
            return (self.zeros(batch, self.hidden_size),)

        def forward(self, x, state):
            h = self.cell(x, state[0]) * torch.sigmoid(self.gate(x))
            return (*self.heads(h), (h,))

    torch.manual_seed(0)
    agent = GatedGRU(OBSERVATION_SIZE, N_ACTIONS, 8)
    trainer = A2C(agent, A2CLoss(), A2CUpdates(lr=1e-2, meta_every=2))
    gate = agent.gate.weight.detach().clone()
    maze, actions = Maze(7, batch=2, episode_length=10), torch.Generator().manual_seed(0)
    metrics = trainer.train_episode(maze, torch.Generator().manual_seed(0), actions)
    assert set(metrics) >= {"reward", "loss"} and torch.equal(agent.gate.weight, gate)  # φ waits
    trainer.train_episode(maze, torch.Generator().manual_seed(1), actions)
    assert not torch.equal(agent.gate.weight, gate)  # φ's step after meta_every = 2 episodes
