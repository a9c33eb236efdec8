"""The recurrent agent protocol of the maze experiment, and the split into fast and slow parameters.

An agent is a :class:`torch.nn.Module` that reads one observation per step and keeps a state
across the steps of an episode (zeroed at its start)::

    state = agent.initial_state(batch)
    logits, value, state = agent(observation, state)      # (B, actions), (B,), new state

Its parameters split in two, equinox-style by a filter on their names (:func:`partition`): the
*task* parameters θ, trained every episode, and the *meta* parameters φ named by the class
attribute ``META`` (module-name prefixes), trained on the slow timescale. Baselines have no meta
parameters: everything they learn is θ.
"""

from __future__ import annotations

from torch import Tensor, nn

AgentState = tuple[Tensor, ...]


class RecurrentAgent(nn.Module):
    """Base class: ``initial_state`` and ``forward`` (see the module docstring)."""

    META: tuple[str, ...] = ()

    def __init__(self, observation_size: int, n_actions: int, hidden_size: int) -> None:
        super().__init__()
        self.observation_size = observation_size
        self.n_actions = n_actions
        self.hidden_size = hidden_size
        self.policy = nn.Linear(hidden_size, n_actions)
        self.value = nn.Linear(hidden_size, 1)

    def initial_state(self, batch: int) -> AgentState:
        raise NotImplementedError

    def heads(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Action logits (B, actions) and state values (B,) read out of the hidden state."""
        return self.policy(hidden), self.value(hidden).squeeze(-1)

    def zeros(self, *shape: int) -> Tensor:
        parameter = next(self.parameters())
        return parameter.new_zeros(shape)


def is_meta(agent: RecurrentAgent, name: str) -> bool:
    """Whether parameter ``name`` belongs to the slow timescale (a module named in ``agent.META``)."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in agent.META)


def partition(agent: RecurrentAgent) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """``(task, meta)``: the agent's named parameters split by :func:`is_meta`."""
    task, meta = {}, {}
    for name, parameter in agent.named_parameters():
        (meta if is_meta(agent, name) else task)[name] = parameter
    return task, meta
