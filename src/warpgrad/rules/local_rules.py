"""Gregor-style learned local update rules (after Gregor 2020, "Finding online neural update rules
by learning to remember", arXiv 2003.03124) as a :class:`~warpgrad.rules.base.LearnedRule`.

**This is not a reproduction.** The paper has no public code and only its abstract was available;
everything below beyond the abstract is this module's own design.

From the abstract: online, local update rules for neuron activations ("bodies") and weights
("synapses"), learned from scratch; the state of every neuron and of every synapse is a small
vector; the updates are two meta-networks shared by all neurons (body network) and all synapses
(synapse network); neuron types differ only by learned embedding vectors, so the same two
functions serve every neuron; the meta-objective is *remembering* past snippets of experience,
trained with short-term backpropagation, rather than evolution or long-horizon backpropagation
through the task.

The design (ours): layers input (``in_dim`` neurons) → hidden → output (``n_classes``), each neuron
j with a state a_j ∈ R^{n_a}, each synapse (i → j) with a state w_ij ∈ R^{n_w}, three neuron types
(input, hidden, output) with embeddings e ∈ R^{n_e}.

- Messages, bilinear in synapse and sender state (so that the sum over senders can act like a
  weighted sum): forward into j, m_j = Σ_i T_f (w̃_ij ⊗ ã_i) / √n_pre, backward into i,
  m_i = Σ_j T_b (w̃_ij ⊗ ã_j) / √n_post, with x̃ = [x, 1]; T_f, T_b ∈ R^{n_a × (n_w+1) × (n_a+1)}.
- Body network (one MLP, all neurons): z = [a_j, m_fwd, m_bwd, e_type(j), phase] → tanh hidden,
  plus a linear skip path from z (without it, signals died out over the two body updates between
  input and logits at initialisation: a unit input change moved the logits by ~0.004) → a gate g
  and a candidate c, a_j ← a_j + σ(g) ⊙ (c − a_j) (a GRU-like convex update: bounded by the
  candidates, and able to hold a memory).
- Synapse network (one MLP, all synapses): w_ij ← w_ij + 0.1 · gain ⊙ tanh(MLP([w_ij, a_i, a_j,
  e_type(i), e_type(j)])). It sees only its own synapse and the two neurons it joins (local).
- External values are *held* slots: input neuron i's slot 0 is x_i, output neuron k's slot 1 is
  the feedback (the previous label); the logits are the output neurons' slot 0.
- One :meth:`LocalRules.step` = a learning sweep (phase 1: the feedback arrives; bodies update
  output → hidden → input, while the states still carry the previous input's activity), one
  synapse update of every synapse, then a forward sweep (phase 0: x_t arrives; bodies update
  input → hidden → output) whose output slot 0 are the logits. A prediction therefore depends on
  the labels of earlier examples only.
- Initial states: neuron states a learned vector per type; synapse states mean + exp(log_std) ⊙
  N(0, 1), drawn per episode from the generator (symmetry breaking).

Meta-objectives: :func:`remember_loss` (mean squared error of reconstructing x_{t−d}, d ∈ 1..D,
from the hidden neurons' current states; truncated backpropagation through windows of a few steps;
feedback is zero) with :func:`meta_train_remember`, and the online cross-entropy
:func:`~warpgrad.rules.base.episode_loss` with :func:`meta_train_task`.

The read-out is linear in the hidden states but goes *through the episode's own input → hidden
synapses*: x̂_i = R_d (Σ_j w̃_ij ⊗ ã_j) / √n_hidden + b_d, one head (R_d, b_d) per delay in the
meta-parameters (a backward message with its own tensor). A plain linear map from the flattened
hidden states cannot work here: synapse states are drawn afresh per episode, so which hidden
neuron codes for which input differs from episode to episode (measured: at initialisation a
least-squares fit from the flattened hidden states recovers nothing, not even the current input
(held-out MSE ≥ 1 on unit-variance inputs), while one through the synapses reaches 0.74 for x_t and
0.89 for x_{t−1}; the meta-training has to make longer delays recoverable).

Measured (CPU, 8 inputs, 8 hidden neurons, one seed, not a benchmark): 200 Adam steps of
:func:`meta_train_remember` (delays 1..3, window 4) took the held-out remembering MSE from 1.03 to
0.27, while training only the read-out heads stayed at 0.99; 300 steps of :func:`meta_train_task`
on 2-class blobs whose label ↔ centre pairing is flipped at random per episode (so it must be read
from the feedback) took the online accuracy from chance to 0.82 (≈ 0.9 from the second example on).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from warpgrad.core.tree import Params, tree_map, tree_stack
from warpgrad.errors import UsageError
from warpgrad.rules.base import Episodes, LearnedRule, episode_loss

__all__ = ["LocalRules", "meta_train_remember", "meta_train_task", "remember_loss"]

INPUT, HIDDEN, OUTPUT = 0, 1, 2  # neuron types (rows of meta["embedding"])


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"{name}={value!r}: must be an integer >= {low}")


class LocalRules:
    """Neurons and synapses with vector states, updated by two shared learned networks (see the
    module docstring). Meta-parameters: ``init_meta``; learner state: ``{"a0", "a1", "a2"}``
    (neuron states of the input, hidden and output layers, (n, neuron_state)) and ``{"w0", "w1"}``
    (synapse states, (n_pre, n_post, synapse_state))."""

    vectorizable = True

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 32,
        neuron_state: int = 4,
        synapse_state: int = 4,
        embedding: int = 4,
        body_hidden: int = 32,
        synapse_hidden: int = 16,
        max_delay: int = 5,
    ) -> None:
        for name, value, low in (
            ("in_dim", in_dim, 1),
            ("n_classes", n_classes, 2),
            ("hidden", hidden, 1),
            ("neuron_state", neuron_state, 2),  # slots 0 and 1 are the held input / feedback slots
            ("synapse_state", synapse_state, 1),
            ("embedding", embedding, 1),
            ("body_hidden", body_hidden, 1),
            ("synapse_hidden", synapse_hidden, 1),
            ("max_delay", max_delay, 1),
        ):
            _check_int(name, value, low)
        self.name = "local-rules"
        self.in_dim, self.n_classes, self.hidden = in_dim, n_classes, hidden
        self.neuron_state, self.synapse_state, self.embedding = neuron_state, synapse_state, embedding
        self.body_hidden, self.synapse_hidden, self.max_delay = body_hidden, synapse_hidden, max_delay
        self.sizes = (in_dim, hidden, n_classes)
        self.kinds = (INPUT, HIDDEN, OUTPUT)

    # -- meta-parameters and fresh learners ---------------------------------------------------

    def init_meta(self, generator: torch.Generator) -> Params:
        na, nw, ne = self.neuron_state, self.synapse_state, self.embedding
        bh, sh = self.body_hidden, self.synapse_hidden
        body_in, synapse_in = 3 * na + ne + 1, nw + 2 * na + 2 * ne

        def uniform(*shape: int) -> Tensor:  # torch.nn.Linear's default, fan-in = shape[0]
            return (torch.rand(*shape, generator=generator) * 2 - 1) / math.sqrt(shape[0])

        def message() -> Tensor:
            return torch.randn(na, nw + 1, na + 1, generator=generator) / math.sqrt((nw + 1) * (na + 1))

        return {
            "embedding": torch.randn(3, ne, generator=generator),
            "neuron_init": torch.zeros(3, na),
            "synapse_mean": torch.zeros(nw),
            "synapse_log_std": torch.zeros(nw),
            "message_forward": message(),
            "message_backward": message(),
            "body_w1": uniform(body_in, bh),
            "body_b1": torch.zeros(bh),
            "body_w2": uniform(bh, 2 * na),
            "body_b2": torch.zeros(2 * na),
            "body_skip": torch.randn(body_in, 2 * na, generator=generator) / math.sqrt(body_in),
            "synapse_w1": uniform(synapse_in, sh),
            "synapse_b1": torch.zeros(sh),
            "synapse_w2": uniform(sh, nw),
            "synapse_b2": torch.zeros(nw),
            "synapse_gain": torch.ones(nw),
            "readout": torch.zeros(self.max_delay, nw + 1, na + 1),
            "readout_bias": torch.zeros(self.max_delay),
        }

    def init_state(self, meta: Params, generator: torch.Generator) -> dict:
        state = {
            f"a{k}": meta["neuron_init"][kind].repeat(n, 1) for k, (n, kind) in enumerate(zip(self.sizes, self.kinds))
        }
        for k, (pre, post) in enumerate(zip(self.sizes, self.sizes[1:])):
            noise = torch.randn(pre, post, self.synapse_state, generator=generator, dtype=meta["synapse_mean"].dtype)
            state[f"w{k}"] = meta["synapse_mean"] + torch.exp(meta["synapse_log_std"]) * noise
        return state

    # -- the two shared networks ----------------------------------------------------------------

    @staticmethod
    def messages(tensor: Tensor, w: Tensor, a: Tensor, forward: bool) -> Tensor:
        """Forward (into each post-synaptic neuron j, from the senders' states ``a`` = a_pre) or
        backward (into each pre-synaptic neuron i, ``a`` = a_post) messages, (n_receivers, n_a)."""
        senders = torch.cat([a, a.new_ones(a.shape[0], 1)], -1)  # ã, (n_senders, n_a + 1)
        pair = torch.einsum("ijp,iq->jpq" if forward else "ijp,jq->ipq", w, senders)  # Σ w ⊗ ã
        bias = senders.sum(0).expand(pair.shape[0], 1, -1)  # Σ 1 ⊗ ã (the constant slot of w̃)
        total = torch.cat([pair, bias], 1) / math.sqrt(w.shape[0] if forward else w.shape[1])
        return torch.einsum("kpq,npq->nk", tensor, total)

    def body(self, meta: Params, a: Tensor, forward: Tensor, backward: Tensor, kind: int, phase: float) -> Tensor:
        """The body network applied to every neuron of one layer: the new states (n, n_a)."""
        n, na = a.shape
        embedding = meta["embedding"][kind].expand(n, -1)
        z = torch.cat([a, forward, backward, embedding, a.new_full((n, 1), phase)], -1)
        out = (
            torch.tanh(z @ meta["body_w1"] + meta["body_b1"]) @ meta["body_w2"]
            + z @ meta["body_skip"]
            + meta["body_b2"]
        )
        gate, candidate = torch.sigmoid(out[:, :na]), out[:, na:]
        return a + gate * (candidate - a)

    def synapse_update(
        self, meta: Params, w: Tensor, a_pre: Tensor, a_post: Tensor, kind_pre: int, kind_post: int
    ) -> Tensor:
        """Δw_ij = 0.1 · gain ⊙ tanh(MLP([w_ij, a_i, a_j, e_pre, e_post])) for every synapse of a
        layer, (n_pre, n_post, n_w); the first layer is split by input block, never concatenated."""
        nw, na = self.synapse_state, self.neuron_state
        w1, e = meta["synapse_w1"], meta["embedding"]
        on_w, on_pre, on_post = w1[:nw], w1[nw : nw + na], w1[nw + na : nw + 2 * na]
        on_types = w1[nw + 2 * na :]
        constant = torch.cat([e[kind_pre], e[kind_post]]) @ on_types + meta["synapse_b1"]
        hidden = torch.einsum("ijp,ph->ijh", w, on_w) + (a_pre @ on_pre)[:, None] + (a_post @ on_post)[None] + constant
        out = torch.einsum("ijh,hp->ijp", torch.tanh(hidden), meta["synapse_w2"]) + meta["synapse_b2"]
        return 0.1 * meta["synapse_gain"] * torch.tanh(out)

    # -- one example --------------------------------------------------------------------------

    @staticmethod
    def _hold(a: Tensor, slot: int, value: Tensor) -> Tensor:
        mask = torch.zeros(a.shape[-1], dtype=a.dtype, device=a.device)
        mask[slot] = 1
        return a + mask * (value[:, None] - a)

    def _sweep(self, meta: Params, a: list, w: list, phase: float, held_input: Tensor, feedback: Tensor) -> list:
        last = len(a) - 1
        order = range(last, -1, -1) if phase else range(last + 1)

        def hold(k: int, state: Tensor) -> Tensor:
            if k == 0:
                state = self._hold(state, 0, held_input)
            if k == last:
                state = self._hold(state, 1, feedback)
            return state

        for k in order:
            state = hold(k, a[k])
            zeros = state.new_zeros(state.shape)
            forward = self.messages(meta["message_forward"], w[k - 1], a[k - 1], True) if k > 0 else zeros
            backward = self.messages(meta["message_backward"], w[k], a[k + 1], False) if k < last else zeros
            a[k] = hold(k, self.body(meta, state, forward, backward, self.kinds[k], phase))
        return a

    def step(self, meta: Params, state: dict, x: Tensor, feedback: Tensor) -> tuple[dict, Tensor]:
        a = [state[f"a{k}"] for k in range(len(self.sizes))]
        w = [state[f"w{k}"] for k in range(len(self.sizes) - 1)]
        # learning sweep: the label of x_{t-1} arrives while input slot 0 still holds x_{t-1}
        a = self._sweep(meta, a, w, 1.0, a[0][:, 0], feedback)
        w = [
            wl + self.synapse_update(meta, wl, a[k], a[k + 1], self.kinds[k], self.kinds[k + 1])
            for k, wl in enumerate(w)
        ]
        a = self._sweep(meta, a, w, 0.0, x, feedback)  # forward sweep with x_t
        new = {f"a{k}": al for k, al in enumerate(a)} | {f"w{k}": wl for k, wl in enumerate(w)}
        return new, a[-1][:, 0]


# -- meta-objectives --------------------------------------------------------------------------


def _batched_step(rule: LearnedRule) -> Callable:
    if rule.vectorizable:
        return torch.func.vmap(rule.step, in_dims=(None, 0, 0, 0))

    def step(meta: Params, state: dict, x: Tensor, feedback: Tensor) -> tuple[dict, Tensor]:
        outputs = [rule.step(meta, tree_map(lambda s: s[e], state), x[e], feedback[e]) for e in range(x.shape[0])]
        return tree_stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])

    return step


def _check_remember(rule: LocalRules, xs: Tensor, window: int, max_delay: int) -> None:
    _check_int("window", window, 1)
    _check_int("max_delay", max_delay, 1)
    if max_delay > rule.max_delay:
        raise UsageError(f"max_delay={max_delay}: the rule has read-out heads for delays 1..{rule.max_delay}")
    if xs.dim() != 3 or xs.shape[-1] != rule.in_dim:
        raise UsageError(f"inputs must be (E, T, {rule.in_dim}), got {tuple(xs.shape)}")


def _remember_window(
    rule: LocalRules,
    meta: Params,
    state: dict,
    xs: Tensor,
    start: int,
    stop: int,
    max_delay: int,
    generator: torch.Generator,
) -> tuple[dict, Tensor, int]:
    """Steps ``start..stop-1`` of the streams ``xs`` (E, T, in_dim) with zero feedback; the summed
    squared-error terms of reconstructing x_{t−d} (d uniform in 1..min(max_delay, t), per episode
    and step) from the hidden states by read-out head d (through the synapses w0), and their count."""
    count_e = xs.shape[0]
    step, feedback = _batched_step(rule), xs.new_zeros(count_e, rule.n_classes)
    read = torch.func.vmap(lambda head, w, a: rule.messages(head, w, a, False))
    total, count = xs.new_zeros(()), 0
    for t in range(start, stop):
        state, _ = step(meta, state, xs[:, t], feedback)
        if t == 0:
            continue
        d = torch.randint(1, min(max_delay, t) + 1, (count_e,), generator=generator)
        target = xs[torch.arange(count_e), t - d]
        heads = meta["readout"][d - 1][:, None]  # (E, 1, n_w + 1, n_a + 1)
        guess = read(heads, state["w0"], state["a1"])[..., 0] + meta["readout_bias"][d - 1][:, None]
        total, count = total + ((guess - target) ** 2).mean(-1).sum(), count + count_e
    return state, total, count


def _fresh(rule: LearnedRule, meta: Params, count: int, generator: torch.Generator) -> dict:
    return tree_stack([rule.init_state(meta, generator) for _ in range(count)])


def remember_loss(
    rule: LocalRules, meta: Params, xs: Tensor, generator: torch.Generator, window: int = 8, max_delay: int = 5
) -> Tensor:
    """The remembering meta-loss over streams ``xs`` (E, T, in_dim) from fresh learners: the mean
    squared error of reconstructing x_{t−d} from the hidden states at every step t ≥ 1, with the
    gradient truncated every ``window`` steps (short-term backpropagation)."""
    _check_remember(rule, xs, window, max_delay)
    state = _fresh(rule, meta, xs.shape[0], generator)
    total, count = xs.new_zeros(()), 0
    for start in range(0, xs.shape[1], window):
        if start:
            state = tree_map(torch.Tensor.detach, state)
        state, part, n = _remember_window(
            rule, meta, state, xs, start, min(start + window, xs.shape[1]), max_delay, generator
        )
        total, count = total + part, count + n
    return total / max(count, 1)


def meta_train_remember(
    rule: LocalRules,
    meta: Params,
    sample_inputs: Callable[[torch.Generator], Tensor],
    steps: int,
    lr: float = 1e-3,
    window: int = 8,
    generator: torch.Generator | None = None,
    max_delay: int = 5,
) -> tuple[Params, list[float]]:
    """Truncated BPTT on the remembering loss: unroll ``window`` steps, take one Adam step, detach
    the learner state and continue; a new batch ``sample_inputs(generator)`` (E, T, in_dim) and
    fresh learners when a stream ends. Returns the new meta-parameters and the per-window losses."""
    _check_int("steps", steps, 0)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    params = {k: v.detach().clone().requires_grad_() for k, v in meta.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    losses: list[float] = []
    xs, state, start = None, None, 0
    while len(losses) < steps:
        if xs is None or start >= xs.shape[1]:
            xs = sample_inputs(generator)
            _check_remember(rule, xs, window, max_delay)
            if xs.shape[1] < 2:
                raise UsageError(f"streams of {xs.shape[1]} step(s): remembering needs at least 2")
            state, start = _fresh(rule, params, xs.shape[0], generator), 0
        stop = min(start + window, xs.shape[1])
        state, total, count = _remember_window(rule, params, state, xs, start, stop, max_delay, generator)
        state, start = tree_map(torch.Tensor.detach, state), stop
        if count == 0:  # a window holding only t = 0: nothing to remember yet
            continue
        loss = total / count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {k: v.detach() for k, v in params.items()}, losses


def meta_train_task(
    rule: LearnedRule,
    meta: Params,
    sample_episodes: Callable[[torch.Generator], Episodes],
    steps: int,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[Params, list[float]]:
    """Adam on the task meta-loss :func:`~warpgrad.rules.base.episode_loss` (full BPTT through each
    episode), one new batch ``sample_episodes(generator)`` per step. Returns meta and the losses."""
    _check_int("steps", steps, 0)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    params = {k: v.detach().clone().requires_grad_() for k, v in meta.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = episode_loss(rule, params, sample_episodes(generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {k: v.detach() for k, v in params.items()}, losses
