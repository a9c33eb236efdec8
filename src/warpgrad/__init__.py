"""warpgrad: meta-learned update rules in PyTorch.

WarpGrad (Flennerhag et al., ICLR 2020) and the methods it is compared with, over a functional
core of parameter dicts (:mod:`warpgrad.core`). The flat API below is everything a user needs:
learners (meta-learners and continual learners), the task protocol, parameter filters, inner
optimisers, layers and the engine's :func:`run`. See ``docs/`` for what each method computes and
``docs/extending.md`` for your own tasks, models and experiments.
"""

from warpgrad.core.batching import batching_allowed, unbatchable_modules
from warpgrad.core.optim import InnerOptimizer, adam, make_inner_optimizer, momentum, per_parameter_sgd, sgd
from warpgrad.core.params import (
    both,
    combine,
    everything,
    functional_apply,
    head_only,
    not_warp,
    only,
    partition,
    warp_only,
)
from warpgrad.core.shell import LOCAL, MetaGradients, MetaShell, Reduction
from warpgrad.core.tree import detach, tree_map, tree_stack
from warpgrad.core.unroll import unroll
from warpgrad.layers import MLP, BatchNorm, Conv4, Warp, conv_warp, linear_warp
from warpgrad.methods.anil import ANIL
from warpgrad.methods.base import MetaLearner, NoMetaLearning
from warpgrad.methods.finetune import FineTune
from warpgrad.methods.leap import Leap
from warpgrad.methods.maml import MAML, MetaSGD
from warpgrad.methods.metafop import MetaFOP
from warpgrad.methods.registry import register
from warpgrad.methods.reptile import Reptile
from warpgrad.methods.tnets import TNets
from warpgrad.methods.warpgrad import WarpGrad
from warpgrad.optim import FOP
from warpgrad.tasks.base import SeededTask, Task, TaskFamily, evaluation, objective

__version__ = "0.1.0"

_CONTINUAL = (
    "ContinualLearner",
    "SGDLearner",
    "EWC",
    "DHPLearner",
    "OML",
    "ANML",
    "ContinualWarpGrad",
    "SequentialBaseline",
)
_ENGINE = ("run", "train", "Experiment", "Profile", "register_experiment")


def __getattr__(name: str):
    """Continual learners and the engine, imported on first use (they pull in more modules)."""
    if name in _CONTINUAL:
        from warpgrad.methods import continual

        return getattr(continual, name)
    if name in ("run", "train"):
        from warpgrad import engine

        return getattr(engine, name)
    if name in ("Experiment", "Profile", "register_experiment"):
        from warpgrad import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module 'warpgrad' has no attribute {name!r}")


__all__ = [
    "FOP",
    # core
    "InnerOptimizer",
    "sgd",
    "momentum",
    "adam",
    "per_parameter_sgd",
    "make_inner_optimizer",
    "partition",
    "combine",
    "functional_apply",
    "not_warp",
    "warp_only",
    "head_only",
    "only",
    "everything",
    "both",
    "detach",
    "tree_map",
    "tree_stack",
    "unroll",
    "batching_allowed",
    "unbatchable_modules",
    "MetaShell",
    "MetaGradients",
    "Reduction",
    "LOCAL",
    # layers
    "MLP",
    "Conv4",
    "Warp",
    "BatchNorm",
    "conv_warp",
    "linear_warp",
    # meta-learners
    "MetaLearner",
    "NoMetaLearning",
    "WarpGrad",
    "MAML",
    "MetaSGD",
    "MetaFOP",
    "ANIL",
    "Reptile",
    "Leap",
    "TNets",
    "FineTune",
    "register",
    # continual learners
    *_CONTINUAL,
    # tasks
    "Task",
    "TaskFamily",
    "SeededTask",
    "objective",
    "evaluation",
    # engine
    *_ENGINE,
]
