"""VS-ML: every weight of a network is a tiny LSTM, one set of LSTM parameters shared by all.

Kirsch & Schmidhuber, "Meta Learning Backpropagation And Improving It", NeurIPS 2021
(arXiv 2012.14905), as a :class:`~warpgrad.rules.base.LearnedRule`. Written after the authors' code
(github.com/louiskirsch/vsml-neurips2021: ``models.py`` ``VSMLRNN``/``SubRNN``, ``recurrent.py``
``CustomLSTM``, ``vsml_layers.py`` ``dense``, ``configs/default.yaml``) with its default settings.

The learner is a stack of dense layers sizes in_dim → hidden_layers… → n_classes. Weight (a, b) of a
layer, from input neuron a to output neuron b, is a sub-RNN with state (h_ab, c_ab), each
``state_size`` (16) wide. The meta-parameters (``init_meta``) are those of ONE sub-RNN, shared by all
weights of all layers: an LSTM ``lstm_w`` (2·msg + state, 4·state), ``lstm_b`` and two read-outs
``fwd_w``/``fwd_b``, ``bwd_w``/``bwd_b`` (state → msg). Per example x_t, with ``feedback`` the
one-hot label of x_{t−1}:

    1. error e = ∂L/∂logits of the cross-entropy of the previous logits (kept in the state) against
       ``feedback``: e = softmax(logits_{t−1})·Σfeedback − feedback (zero at t = 0, as the
       reference's ``init_error``); the output neurons' backward messages are [e_b, 0, …, 0].
    2. the input neurons' forward messages are [x_a, 0, …, 0].
    3. layer by layer, bottom up, ``micro_ticks`` (2) times with the same incoming messages:
       every sub-RNN steps its LSTM on [f_a ; b_b] (forward message of its input neuron, backward
       message of its output neuron):
           i, g, f, o = split(W [f_a ; b_b ; h_ab] + bias)      (order i, g, f, o as in the reference)
           c_ab ← σ(f + 5)·c_ab + σ(i − 5)·tanh(g),  h_ab ← σ(o)·tanh(c_ab)
       then messages are read out of the last h: f'_ab = fwd_w h_ab + fwd_b, b'_ab = bwd_w h_ab + bwd_b;
       output neuron b's forward message is mean_a f'_ab (the next layer's input, used at once),
       input neuron a's backward message is mean_b b'_ab (the layer below's incoming backward
       message at the NEXT example: no separate backward sweep, the reference's default).
    4. logit_b = 100·tanh(f_b[1] / 100) of the last layer (message index 1, ``tanh_bound`` 100).

Initial state (``init_state``): h = 0; c's first half truncated normal with σ = 1/√fan_in of its
layer (``init_rand_proportion`` 0.5), second half 0; incoming backward messages and the kept logits 0.
Initial meta-parameters (``init_meta``): truncated normal weights with σ = 1/√fan_in (the
``CustomLSTM`` initializer, fan_in = 2·msg + state; haiku's ``Linear`` default for the read-outs),
zero biases. Truncated normal here is haiku's ``TruncatedNormal``: a standard normal cut at ±2, then
times σ (not rescaled, so the actual std is ≈ 0.88σ); this and ``Linear``'s default are read from
haiku's source, not from the reference repository.

Read in the reference and followed: the LSTM (gate order, ±5 biases, one Linear on [x, h]), the
sub-RNN's input [f_a ; b_b] and its two read-outs, the mean aggregation over a and over b, the
2 micro-ticks with fixed incoming messages, input at index 0, output at index 1 bounded by
100·tanh(·/100), the error [∂L/∂logits, 0 (no label feeding), 0, …] with ∂L/∂logits of the mean
batch cross-entropy (batch size 1), zero error at the first example, the upward order of the layers
with the backward messages handed down for the next tick, the initial states. Departures:
    - the reference computes the error right after the forward pass with the current label and
      feeds it at the next example; here the label arrives with the next step (the protocol), so
      the previous logits are kept in the state: the same numbers, one step later in the code.
    - the mean of the read-outs is computed as the read-out of the mean h (equal, being linear:
      different rounding only).
    - the random initial c is drawn from ``generator`` (the reference: haiku's rng in each
      episode's forward pass); by inverse CDF, not JAX's sampler: same distribution, other numbers.
    - left out, off in the reference's default config: conv layers, layer norm on the messages
      (on in its ``configs/backprop.yaml``), label feeding, the separate backward sweep, layer-wise
      sub-RNNs, merging states across a batch (only for batch size > 1).
    - meta-training (ES by default in the reference, BPTT in ``configs/backprop.yaml``) is the
      caller's business; both go through :func:`~warpgrad.rules.base.episode_loss`, which is the
      reference's "mean" loss (the reference's normalisation of inputs is the data's business).

Cost: the step is O(layers × fan_in × fan_out × micro_ticks × state²); the (a, b) grid is batched
(einsum), episodes are vmapped (``vectorizable``; set it False on an instance for the loop).

:func:`clone_backprop` is learning-algorithm cloning (LAC, the paper's Section 4.1): the paper gives
no code for it; the version here is designed and documented in that function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError

__all__ = ["VSML", "clone_backprop", "cloning_loss"]

FORGET_BIAS, INPUT_BIAS, TANH_BOUND, OUTPUT_INDEX = 5.0, -5.0, 100.0, 1


def truncated_normal(shape: tuple[int, ...], std: float, generator: torch.Generator, dtype=None) -> Tensor:
    """Normal(0, std²) truncated to ±2 std (haiku's ``TruncatedNormal``: not rescaled), by inverse CDF."""
    low = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    u = low + (1 - 2 * low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    return (math.sqrt(2) * torch.erfinv(2 * u - 1) * std).to(dtype or torch.get_default_dtype())


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name}={value!r}: must be a positive integer")
    return value


class VSML:
    """VS-ML with dense layers (see the module docstring), in the learned-rule protocol."""

    name = "vsml"
    vectorizable = True

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden_layers: tuple[int, ...] = (),
        state_size: int = 16,
        msg_size: int = 8,
        micro_ticks: int = 2,
    ) -> None:
        self.in_dim, self.n_classes = _positive_int("in_dim", in_dim), _positive_int("n_classes", n_classes)
        self.hidden_layers = tuple(_positive_int("hidden_layers[i]", h) for h in hidden_layers)
        self.state_size, self.msg_size = _positive_int("state_size", state_size), _positive_int("msg_size", msg_size)
        self.micro_ticks = _positive_int("micro_ticks", micro_ticks)
        if msg_size < 2:
            raise UsageError(f"msg_size={msg_size}: must be at least 2 (the logit is read from message index 1)")
        self.sizes = (self.in_dim, *self.hidden_layers, self.n_classes)

    def init_meta(self, generator: torch.Generator) -> Params:
        s, m = self.state_size, self.msg_size
        return {
            "lstm_w": truncated_normal((2 * m + s, 4 * s), 1 / math.sqrt(2 * m + s), generator),
            "lstm_b": torch.zeros(4 * s),
            "fwd_w": truncated_normal((s, m), 1 / math.sqrt(s), generator),
            "fwd_b": torch.zeros(m),
            "bwd_w": truncated_normal((s, m), 1 / math.sqrt(s), generator),
            "bwd_b": torch.zeros(m),
        }

    def init_state(self, meta: Params, generator: torch.Generator) -> dict[str, Tensor]:
        dtype, s, half = meta["lstm_w"].dtype, self.state_size, self.state_size // 2
        state = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes, self.sizes[1:])):
            random_half = truncated_normal((fan_in, fan_out, half), 1 / math.sqrt(fan_in), generator, dtype)
            state[f"h{i}"] = torch.zeros(fan_in, fan_out, s, dtype=dtype)
            state[f"c{i}"] = torch.cat([random_half, torch.zeros(fan_in, fan_out, s - half, dtype=dtype)], -1)
            if i < len(self.sizes) - 2:  # incoming backward messages of a layer below the top one
                state[f"b{i}"] = torch.zeros(fan_out, self.msg_size, dtype=dtype)
        state["logits"] = torch.zeros(self.n_classes, dtype=dtype)
        return state

    def lstm(self, meta: Params, projected: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the custom LSTM on every sub-RNN at once: ``projected`` is the input's part of
        the gate pre-activations (broadcast against h's leading dims), h and c (..., state)."""
        s = self.state_size
        gates = projected + torch.einsum("...s,sg->...g", h, meta["lstm_w"][2 * self.msg_size :]) + meta["lstm_b"]
        i, g, f, o = gates.split(s, -1)
        c = torch.sigmoid(f + FORGET_BIAS) * c + torch.sigmoid(i + INPUT_BIAS) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def dense(self, meta: Params, fwd: Tensor, bwd: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, ...]:
        """A VS-ML dense layer: incoming messages fwd (A, msg) and bwd (B, msg), states (A, B, state);
        ``micro_ticks`` LSTM steps, then the aggregated messages out, (B, msg) and (A, msg)."""
        w, m = meta["lstm_w"], self.msg_size
        projected = (fwd @ w[:m])[:, None, :] + (bwd @ w[m : 2 * m])[None, :, :]  # [f_a ; b_b] W, (A, B, 4S)
        for _ in range(self.micro_ticks):
            h, c = self.lstm(meta, projected, h, c)
        fwd_out = h.mean(0) @ meta["fwd_w"] + meta["fwd_b"]  # = mean over a of f'_ab
        bwd_out = h.mean(1) @ meta["bwd_w"] + meta["bwd_b"]  # = mean over b of b'_ab
        return fwd_out, bwd_out, h, c

    def step(self, meta: Params, state: dict, x: Tensor, feedback: Tensor) -> tuple[dict, Tensor]:
        error = torch.softmax(state["logits"], -1) * feedback.sum() - feedback  # ∂CE/∂logits, 0 at t = 0
        fwd = F.pad(x[:, None], (0, self.msg_size - 1))
        top = len(self.sizes) - 2
        new = {}
        for i in range(top + 1):
            bwd = F.pad(error[:, None], (0, self.msg_size - 1)) if i == top else state[f"b{i}"]
            fwd, bwd_out, new[f"h{i}"], new[f"c{i}"] = self.dense(meta, fwd, bwd, state[f"h{i}"], state[f"c{i}"])
            if i > 0:
                new[f"b{i - 1}"] = bwd_out
        new["logits"] = logits = TANH_BOUND * torch.tanh(fwd[:, OUTPUT_INDEX] / TANH_BOUND)
        return {k: new[k] for k in state}, logits  # the keys in init_state's order


def cloning_loss(
    rule: VSML,
    meta: Params,
    generator: torch.Generator,
    alpha: float = 0.2,
    batch: int = 256,
    length: int = 8,
) -> Tensor:
    """The LAC regression loss of :func:`clone_backprop` on a batch of ``batch`` independent sub-RNNs
    (weights) run for ``length`` examples, drawn from ``generator``; differentiable in ``meta``."""
    s, m, half, dtype = rule.state_size, rule.msg_size, rule.state_size // 2, meta["lstm_w"].dtype
    x = torch.randn(length, batch, generator=generator, dtype=dtype)
    error = torch.rand(length, batch, generator=generator, dtype=dtype) * 2 - 1
    error[0] = 0  # no feedback before the first example
    random_half = truncated_normal((batch, half), 1 / math.sqrt(rule.in_dim), generator, dtype)
    c = torch.cat([random_half, torch.zeros(batch, s - half, dtype=dtype)], -1)
    h = torch.zeros(batch, s, dtype=dtype)
    w, previous_x, total = c[:, 0], torch.zeros(batch, dtype=dtype), torch.zeros((), dtype=dtype)
    for t in range(length):
        w_before, w = w, w - alpha * previous_x * error[t]
        messages = torch.zeros(batch, 2 * m, dtype=dtype)
        messages[:, 0], messages[:, m] = x[t], error[t]  # [f_a ; b_b] = [x, 0, …; e, 0, …]
        projected = messages @ meta["lstm_w"][: 2 * m]
        for _ in range(rule.micro_ticks):
            h, c = rule.lstm(meta, projected, h, c)
        fwd, bwd = h @ meta["fwd_w"] + meta["fwd_b"], h @ meta["bwd_w"] + meta["bwd_b"]
        total = total + ((fwd[:, OUTPUT_INDEX] - w * x[t]) ** 2).mean()
        total = total + ((bwd[:, 0] - w_before * error[t]) ** 2).mean() + ((c[:, 0] - w) ** 2).mean()
        previous_x = x[t]
    return total / length


def clone_backprop(
    rule: VSML,
    meta: Params,
    generator: torch.Generator,
    steps: int,
    lr: float,
    alpha: float = 0.2,
    batch: int = 256,
    length: int = 8,
    losses: list[float] | None = None,
) -> Params:
    """Learning-algorithm cloning (LAC): ``steps`` Adam steps (learning rate ``lr``) on the shared
    sub-RNN's meta-parameters, starting from ``meta``, so that one sub-RNN behaves as one weight w of
    a linear layer trained by online backprop with learning rate ``alpha``. Returns the new meta.

    The paper (Section 4.1) clones backprop into VS-ML but publishes no code; this design is ours.
    Each Adam step draws ``batch`` independent weights and runs each, in the runtime's own timing,
    for ``length`` examples t (each of ``micro_ticks`` LSTM steps on the same [f_a ; b_b]):

        inputs      forward message [x_t, 0, …], x_t ~ N(0, 1); backward message [e_{t−1}, 0, …],
                    e ~ U(−1, 1) (the range of softmax − one-hot), e_{−1} = 0
        state       c's first half drawn as in ``init_state`` (σ = 1/√in_dim), the rest and h zero;
                    w_0 = c[0]: the weight lives in state unit c[0]
        algorithm   w_t = w_{t−1} − alpha·x_{t−1}·e_{t−1}     (the update of the previous example,
                    the only one whose error has arrived, made before predicting x_t)
        targets     after the micro-ticks of example t: f'[1] = w_t·x_t (read out as the logit),
                    b'[0] = w_{t−1}·e_{t−1} (backprop of the error through the weight that made it),
                    c[0] = w_t
        loss        the sum of the three squared errors, averaged over weights and examples

    Run as a learner, a cloned single-layer VS-ML then computes logit_b ≈ mean_a w_ab x_a (the mean
    aggregation: a linear layer with weights w/in_dim, trained at rate alpha/in_dim) and updates
    each w_ab with its own x_a and e_b: online backprop with the reference's one-step lag. Unverified
    and not claimed: how close this is to the paper's LAC (its data, targets and losses are not
    published here); multi-layer cloning (hidden layers would need their neurons' outputs at
    message index 0, where inputs arrive, and the messages' other entries are left free); fidelity
    over episodes much longer than ``length`` (the regression sees ``length`` examples only).
    """
    _positive_int("steps", steps)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise UsageError(f"lr={lr!r}: must be a positive number")
    meta = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
    optimizer = torch.optim.Adam(meta.values(), lr=lr)
    for _ in range(steps):
        loss = cloning_loss(rule, meta, generator, alpha=alpha, batch=batch, length=length)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if losses is not None:
            losses.append(loss.item())
    return {k: v.detach() for k, v in meta.items()}
