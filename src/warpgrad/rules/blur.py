"""BLUR, bidirectional learned update rules, as a :class:`~warpgrad.rules.base.LearnedRule`.

Sandler, Vladymyrov, Zhmoginov, Miller, Madams, Jackson, Agüera y Arcas. Meta-Learning
Bidirectional Update Rules. ICML 2021, arXiv:2104.04657. Reference code: google-research,
``blur/blur.py``, ``blur/genome_util.py``, ``blur/synapse_util.py`` (read for this port).

A feed-forward net whose neurons carry k states each, n ∈ R^{N×k}, and whose synapses carry one
weight per state channel: a forward block W ∈ R^{(N_in+1)×N_out×k} (the last row for a constant
bias neuron, 1 in every state) and a backward block B ∈ R^{N_out×N_in×k}. Neurons and synapses are
updated by a genome shared by every neuron, synapse and layer (the reference's default,
``per_layer_genome=False``); the genome is the meta-parameter dict:

    nu_fwd, nu_bwd (k×k): the upper-right and lower-left blocks of the reference's 2k×2k neuron
        transform (its diagonal blocks are unused there too), N(0, 1) at init;
    mu_pre, mu_post (k×k): the Hebbian transform, N(0, 1) at init;
    neuron_keep, neuron_update, synapse_keep, synapse_update (scalars): 1, 1, 1, −1e-3 at init.

That is 4k² + 4 numbers (20 for k = 2). One reference step on an example (x, t), t = 2·onehot − 1:

    1. every neuron state ← 0; the input layer ← [x, 0, …, 0];
    2. forward, l = 0 … L−1:  Δh_j^c = Σ_i Σ_k ñ_i^k ν_fwd[k, c] W_ij^c   (ñ = [n_l; 1 … 1]),
       n_{l+1} ← φ(keep·n_{l+1} + update·Δh), φ = ``forward_activation`` (``last_activation`` on
       the output layer). The synapse's channel c is the *output* state channel (the reference's
       einsum ``'srbik,skl,srijl->srbjl'``); since the states were reset, keep·n is 0 here;
    3. feedback: output layer ← [n_L^0, t, 0, …, 0] (the reference's ``concat_groundtruth_in``);
    4. backward, l = L−1 … 1 (the input layer is not updatable in the reference, so B_0 would only
       feed a discarded update and is not kept): Δh_i^c = Σ_j Σ_k n_{l+1,j}^k ν_bwd[k, c] B_ji^c,
       ``additive``: n_l ← ψ(keep·n_l + update·Δh), ``multiplicative_second_state``:
       n_l ← ψ([n_l^0, n_l^{1:} ⊙ Δh^{1:}]·keep), ψ = ``backward_activation``;
    5. Hebbian, every layer, with the states after step 4: ΔW_ij^o = (ñ_pre μ_pre)_i^o (n_post μ_postᵀ)_j^o
       (the reference's ``'srbik,sko,sol,srbjl->srijo'`` on [pre; 1; post]; its backward block reads
       ΔB_ji^o = (n_post μ_pre)_j^o (n_pre μ_postᵀ)_i^o), then S ← synapse_keep·S + synapse_update·ΔS.

The online protocol splits that step in two, so that a prediction always precedes its label: at
step t the state holds the neuron states of x_{t−1}'s forward pass; the feedback (x_{t−1}'s
one-hot label) runs steps 3–5 on them, then steps 1–2 run on x_t with the updated synapses and the
output layer's state 0 (after ``last_activation``, tanh by default, so in (−1, 1)) is returned as
the logits. With no feedback (t = 0, all zeros) steps 3–5 are skipped (the reference skips them on
unsupervised steps too). Synapses are drawn N(0, ``init_std``²) per episode.

Options from the reference's ``NetworkSpec``: ``symmetric=True`` is ``symmetric_in_out_synapses``
plus ``symmetric_states_synapses`` (B = Wᵀ, every channel a copy of channel 0, and so are the
updates: only W is stored); ``backward_update``. With :func:`backprop_genome`,
``forward_activation="tanh_grad"`` (state 0 ← tanh, state 1 ← tanh′: the reference's unit test uses
the same device with a sigmoid), ``backward_activation="identity"``, ``last_activation="identity"``
and ``symmetric=True``, a step is exactly an SGD step with learning rate ``lr`` of the MLP
y = W_Lᵀ[… tanh(W_0ᵀ[x; 1]) …; 1] on the loss −⟨t, y⟩ (``feedback="label"``) or ½‖t − y‖²
(``feedback="error"``, which injects t − n_L^0 instead of t: an addition here, in the spirit of the
reference's pluggable ``feedback_fn``, not one of its built-in choices).

Not verified against the reference (decisions of this port):
    - the genome is shared by all layers; the scalars are single numbers, not per-layer/species;
    - the synapse init is N(0, init_std²) (the reference's initializers are passed in from outside;
      its genome field ``synapse_init_std`` = 0.1 is taken as the std); it is not meta-learned;
    - no Oja term, synapse normalisation or saturation (all off in the reference's default spec);
    - the bias neuron is 1 in every state, also in the Hebbian update (as ``concat_row`` does);
    - targets are ±1 (2·onehot − 1); the logits for the protocol's cross-entropy are the raw
      output states; :func:`episode_mse` gives the paper's meta-loss, mean (n_L^0 − t)², instead;
    - the Hebbian update sums over a batch of one (the reference sums over its batch).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError
from warpgrad.rules.base import Episodes, episode_loss, run_episodes

__all__ = ["BLUR", "backprop_genome", "episode_mse", "meta_train_adam", "meta_train_cma"]

_ACTIVATIONS = ("relu_tanh", "tanh", "relu", "identity", "tanh_grad")
Loss = Callable[..., Tensor]


def _activate(name: str, h: Tensor) -> Tensor:
    if name == "relu_tanh":  # the reference's default hidden activation
        return torch.relu(torch.tanh(h))
    if name == "tanh":
        return torch.tanh(h)
    if name == "relu":
        return torch.relu(h)
    if name == "tanh_grad":  # state 0: tanh, state 1: its derivative, the rest: tanh
        return torch.cat([torch.tanh(h[:, :1]), 1 - torch.tanh(h[:, 1:2]) ** 2, torch.tanh(h[:, 2:])], 1)
    return h


def _with_bias(n: Tensor) -> Tensor:
    return torch.cat([n, torch.ones_like(n[:1])], 0)


class BLUR:
    """A BLUR network in the learned-rule protocol (see the module docstring for the equations).

    Args:
        in_dim, n_classes: the input size and the number of output neurons (one per class).
        hidden: the hidden layer sizes.
        k: states per neuron (>= 2: state 1 of the output layer receives the label).
        forward_activation, backward_activation, last_activation: one of ``relu_tanh``, ``tanh``,
            ``relu``, ``identity``, ``tanh_grad`` (defaults: the reference's ``default_network_spec``).
        backward_update: ``additive`` or ``multiplicative_second_state``.
        symmetric: B = Wᵀ and all state channels equal (synapses and their updates).
        feedback: ``label`` (state 1 ← t, the reference) or ``error`` (state 1 ← t − n_L^0).
        init_std: the std of the synapses at the start of an episode.
    """

    vectorizable = True

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: tuple[int, ...] = (32,),
        k: int = 2,
        *,
        forward_activation: str = "relu_tanh",
        backward_activation: str = "relu_tanh",
        last_activation: str = "tanh",
        backward_update: str = "additive",
        symmetric: bool = False,
        feedback: str = "label",
        init_std: float = 0.1,
    ) -> None:
        sizes = (in_dim, *tuple(hidden), n_classes)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise UsageError(f"in_dim, hidden and n_classes must be positive integers, got {sizes}")
        if not isinstance(k, int) or k < 2:
            raise UsageError(f"k={k!r}: BLUR needs at least 2 states per neuron")
        for name in (forward_activation, backward_activation, last_activation):
            if name not in _ACTIVATIONS:
                raise UsageError(f"activation {name!r}: allowed are {', '.join(_ACTIVATIONS)}")
        if backward_update not in ("additive", "multiplicative_second_state"):
            raise UsageError(f"backward_update={backward_update!r}: 'additive' or 'multiplicative_second_state'")
        if feedback not in ("label", "error"):
            raise UsageError(f"feedback={feedback!r}: allowed are 'label', 'error'")
        if not (isinstance(init_std, (int, float)) and init_std >= 0 and math.isfinite(init_std)):
            raise UsageError(f"init_std={init_std!r}: must be a finite number >= 0")
        self.name = "blur"
        self.in_dim, self.n_classes, self.hidden, self.k = in_dim, n_classes, tuple(hidden), k
        self.sizes = sizes
        self.forward_activation, self.backward_activation = forward_activation, backward_activation
        self.last_activation, self.backward_update = last_activation, backward_update
        self.symmetric, self.feedback, self.init_std = bool(symmetric), feedback, float(init_std)

    def init_meta(self, generator: torch.Generator) -> Params:
        """A random genome (the reference's ``create_random_genome``), in the default dtype."""
        k, dtype = self.k, torch.get_default_dtype()

        def normal() -> Tensor:
            return torch.randn(k, k, generator=generator, dtype=dtype)

        meta = {"nu_fwd": normal(), "nu_bwd": normal(), "mu_pre": normal(), "mu_post": normal()}
        scalars = {"neuron_keep": 1.0, "neuron_update": 1.0, "synapse_keep": 1.0, "synapse_update": -1e-3}
        return meta | {name: torch.tensor(value, dtype=dtype) for name, value in scalars.items()}

    def init_state(self, meta: Params, generator: torch.Generator) -> dict:
        """Fresh synapses, N(0, init_std²), and zero neurons, in the genome's dtype."""
        dtype, k = meta["nu_fwd"].dtype, self.k

        def normal(*shape: int) -> Tensor:
            return self.init_std * torch.randn(*shape, generator=generator, dtype=dtype)

        synapses = {}
        for layer, (n_in, n_out) in enumerate(zip(self.sizes, self.sizes[1:])):
            if self.symmetric:  # one channel, copied: the reference's sync_states_synapse
                synapses[f"w{layer}"] = normal(n_in + 1, n_out, 1).expand(-1, -1, k).contiguous()
            else:
                synapses[f"w{layer}"] = normal(n_in + 1, n_out, k)
                if layer > 0:
                    synapses[f"b{layer}"] = normal(n_out, n_in, k)
        layers = [torch.zeros(size, k, dtype=dtype) for size in self.sizes]
        return {"synapses": synapses, "layers": layers}

    def _backward_block(self, synapses: Params, layer: int) -> Tensor:
        if self.symmetric:
            return synapses[f"w{layer}"][:-1].transpose(0, 1)
        return synapses[f"b{layer}"]

    def forward(self, meta: Params, synapses: Params, x: Tensor) -> list[Tensor]:
        """Steps 1–2: the neuron states of every layer after the forward pass on ``x``."""
        layers = [torch.cat([x[:, None], torch.zeros_like(x)[:, None].expand(-1, self.k - 1)], 1)]
        count = len(self.sizes) - 1
        for layer in range(count):
            drive = _with_bias(layers[-1]) @ meta["nu_fwd"]  # (N_in + 1, k): Σ_k ñ_i^k ν[k, c]
            delta = torch.einsum("ic,ijc->jc", drive, synapses[f"w{layer}"])
            activation = self.last_activation if layer == count - 1 else self.forward_activation
            layers.append(_activate(activation, meta["neuron_update"] * delta))  # keep · 0 dropped
        return layers

    def learn(self, meta: Params, synapses: Params, layers: list[Tensor], feedback: Tensor) -> Params:
        """Steps 3–5: the synapses after the label ``feedback`` (one-hot) of the forward pass ``layers``."""
        target = 2 * feedback - 1
        layers = list(layers)
        output = layers[-1]
        injected = target if self.feedback == "label" else target - output[:, 0]
        layers[-1] = torch.cat([output[:, :1], injected[:, None], torch.zeros_like(output[:, 2:])], 1)
        keep, update = meta["neuron_keep"], meta["neuron_update"]
        for layer in range(len(self.sizes) - 2, 0, -1):  # hidden layers, from the top
            drive = layers[layer + 1] @ meta["nu_bwd"]  # (N_out, k)
            delta = torch.einsum("jc,jic->ic", drive, self._backward_block(synapses, layer))
            old = layers[layer]
            if self.backward_update == "additive":
                new = keep * old + update * delta
            else:
                new = torch.cat([old[:, :1], old[:, 1:] * delta[:, 1:]], 1) * keep
            layers[layer] = _activate(self.backward_activation, new)
        mu_pre, mu_post_t = meta["mu_pre"], meta["mu_post"].transpose(0, 1)
        new_synapses = {}
        for layer in range(len(self.sizes) - 1):
            pre, post = layers[layer], layers[layer + 1]
            hebb = (_with_bias(pre) @ mu_pre)[:, None, :] * (post @ mu_post_t)[None, :, :]
            if self.symmetric:
                hebb = hebb[..., :1].expand_as(hebb)
            name = f"w{layer}"
            new_synapses[name] = meta["synapse_keep"] * synapses[name] + meta["synapse_update"] * hebb
            if not self.symmetric and layer > 0:
                hebb_b = (post @ mu_pre)[:, None, :] * (pre @ mu_post_t)[None, :, :]
                name = f"b{layer}"
                new_synapses[name] = meta["synapse_keep"] * synapses[name] + meta["synapse_update"] * hebb_b
        return new_synapses

    def step(self, meta: Params, state: dict, x: Tensor, feedback: Tensor) -> tuple[dict, Tensor]:
        learned = self.learn(meta, state["synapses"], state["layers"], feedback)
        has_feedback = feedback.abs().sum() > 0
        synapses = {name: torch.where(has_feedback, learned[name], s) for name, s in state["synapses"].items()}
        layers = self.forward(meta, synapses, x)
        return {"synapses": synapses, "layers": layers}, layers[-1][:, 0]


def backprop_genome(k: int = 2, lr: float = 0.1, dtype: torch.dtype | None = None) -> Params:
    """The reference's ``_grad_neuron_genome`` and ``_grad_hebbian_genome`` (padded with zeros to k
    states), with synapse_update = ``lr``: with the rule settings named in the module docstring,
    BLUR then makes exactly the SGD steps of its MLP."""
    if not isinstance(k, int) or k < 2:
        raise UsageError(f"k={k!r}: the backprop genome needs at least 2 states per neuron")
    dtype = dtype or torch.get_default_dtype()
    nu_fwd, nu_bwd = torch.zeros(k, k, dtype=dtype), torch.eye(k, dtype=dtype)
    nu_fwd[0, 0] = nu_fwd[0, 1] = 1.0  # both channels of the post neuron get Σ_i ñ_i^0 W_ij
    mu_pre, mu_post = torch.eye(k, dtype=dtype), torch.eye(k, dtype=dtype)
    mu_post[:2, :2] = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)  # ΔW_ij^0 = ñ_i^0 n_j^1
    scalars = {"neuron_keep": 1.0, "neuron_update": 1.0, "synapse_keep": 1.0, "synapse_update": float(lr)}
    meta = {"nu_fwd": nu_fwd, "nu_bwd": nu_bwd, "mu_pre": mu_pre, "mu_post": mu_post}
    return meta | {name: torch.tensor(value, dtype=dtype) for name, value in scalars.items()}


def episode_mse(rule: BLUR, meta: Params, episodes: Episodes, generator: torch.Generator) -> Tensor:
    """The paper's meta-loss on the online predictions: mean (n_L^0 − t)² with t = 2·onehot − 1."""
    outputs = run_episodes(rule, meta, episodes, generator)
    return ((outputs - (2 * F.one_hot(episodes.y, rule.n_classes).to(outputs.dtype) - 1)) ** 2).mean()


def _episode_seed(seed: int, iteration: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration)


def meta_train_cma(
    rule: BLUR,
    sample_episodes: Callable[[torch.Generator], Episodes],
    iterations: int,
    sigma: float = 0.1,
    seed: int = 0,
    *,
    meta: Params | None = None,
    population: int | None = None,
    loss: Loss = episode_loss,
) -> tuple[Params, list[float]]:
    """Meta-train the genome by CMA-ES (:class:`warpgrad.estimators.CMAES`, needs ``cma``).

    Each generation draws its episodes with ``sample_episodes(generator)`` and scores every sample
    on them with the same initial synapses (common random numbers); non-finite losses count as
    1e30. Starts at ``meta`` (default: ``rule.init_meta`` seeded with ``seed``). Returns the best
    sample seen (scored on its own generation's episodes) and each generation's best loss."""
    from warpgrad.estimators import CMAES

    start = rule.init_meta(torch.Generator().manual_seed(seed)) if meta is None else meta
    es = CMAES(start, sigma=sigma, seed=seed, population=population)
    history = []
    for iteration in range(iterations):
        if es.stop():
            break
        episodes = sample_episodes(_episode_seed(seed, iteration))
        samples = es.ask()
        with torch.no_grad():
            values = [float(loss(rule, s, episodes, _episode_seed(seed + 1, iteration))) for s in samples]
        values = [v if math.isfinite(v) else 1e30 for v in values]
        es.tell(samples, values)
        history.append(min(values))
    return es.best(), history


def meta_train_adam(
    rule: BLUR,
    sample_episodes: Callable[[torch.Generator], Episodes],
    iterations: int,
    lr: float = 0.01,
    seed: int = 0,
    *,
    meta: Params | None = None,
    loss: Loss = episode_loss,
) -> tuple[Params, list[float]]:
    """Meta-train the genome by Adam on the BPTT meta-gradient of ``loss`` (episodes drawn as in
    :func:`meta_train_cma`). Returns the final genome and the loss before each step."""
    start = rule.init_meta(torch.Generator().manual_seed(seed)) if meta is None else meta
    params = {name: p.detach().clone().requires_grad_(True) for name, p in start.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    history = []
    for iteration in range(iterations):
        episodes = sample_episodes(_episode_seed(seed, iteration))
        value = loss(rule, params, episodes, _episode_seed(seed + 1, iteration))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    return {name: p.detach() for name, p in params.items()}, history
