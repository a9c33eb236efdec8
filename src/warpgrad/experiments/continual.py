"""The continual sine experiment (WarpGrad Algorithm 3): :data:`SINE_CONTINUAL`."""

from __future__ import annotations

from warpgrad.experiments.base import Experiment, MethodSpec, Profile, _schedule, _with
from warpgrad.experiments.methods import _inner
from warpgrad.layers import MLP
from warpgrad.methods.base import MetaLearner
from warpgrad.tasks.base import TaskFamily


def _continual_sine_method(cls_name: str, options: str = "warpgrad") -> MethodSpec:
    """``warpgrad.methods.continual.CLS_NAME`` on the experiment's MLP, with ``options[options]``."""
    from warpgrad.methods import continual

    cls = getattr(continual, cls_name)

    def build(p: Profile) -> MetaLearner:
        o = p.options
        model = MLP(1, o["hidden"], 1, warp=o["warp"])
        return cls(model, _inner(o), o["steps_per_interval"], **o[options])  # type: ignore[return-value]

    return MethodSpec(cls.__doc__.strip().splitlines()[0], build)


def _continual_sine_family(p: Profile) -> TaskFamily:
    from warpgrad.tasks.continual import ContinualSineFamily

    o = p.options
    return ContinualSineFamily(o["intervals"], o["points_per_interval"], o["test_points_per_interval"])


_SINE_CONTINUAL = {
    "intervals": 5,
    "points_per_interval": 10,
    "test_points_per_interval": 50,
    "hidden": (40, 40),
    "warp": {},
    "inner_optimizer": "sgd",
    "inner_lr": 0.01,
    "steps_per_interval": 10,
    "warpgrad": {"objective": "exact", "meta_optimizer": "adam", "warp_lr": 1e-3},
    "ewc": {"lam": 1.0},
}
SINE_CONTINUAL = Experiment(
    name="sine-continual",
    description="Continual sine (WarpGrad Algorithm 3): one sinusoid, x in 5 consecutive sub-intervals learned in "
    "sequence; MSE on all sub-intervals after the sequence.",
    profiles={
        "smoke": Profile(
            "smoke",
            "seconds: 2 meta-steps of 2 sequences (tests)",
            **_schedule(2, 2, 1, 2, 4),
            options=_with(_SINE_CONTINUAL, hidden=(8, 8), steps_per_interval=2),
        ),
        "quick": Profile(
            "quick",
            "minutes on 2 CPU cores: 300 meta-steps of 2 sequences, 100 test sequences",
            **_schedule(300, 2, 50, 16, 100),
            options=_SINE_CONTINUAL,
        ),
        "paper": Profile(
            "paper",
            "Algorithm 3 at scale: 5,000 meta-steps of 8 sequences, 500 test sequences",
            **_schedule(5000, 8, 250, 50, 500),
            options=_SINE_CONTINUAL,
        ),
    },
    make_family=_continual_sine_family,
    methods={
        "baseline": _continual_sine_method("SequentialBaseline"),
        "ewc": _continual_sine_method("SequenceEWC", "ewc"),
        "warpgrad": _continual_sine_method("ContinualWarpGrad"),
    },
)
