"""Continual learning: EWC, DHP Softmax and an SGD baseline on a shared protocol
(``train_experience``/``end_experience``/``predict``); OML and ANML (meta-learned representations,
second order through the sequential inner loop); continual WarpGrad (Algorithm 3)."""

from warpgrad.methods.continual.anml import ANML, anml_networks
from warpgrad.methods.continual.base import ContinualLearner, SGDLearner
from warpgrad.methods.continual.dhp import DHPLearner, DHPNet, DHPSoftmax, hebbian_update, plastic_logits
from warpgrad.methods.continual.ewc import EWC, FISHER_KINDS, ewc_penalty, fisher_diagonal
from warpgrad.methods.continual.oml import OML, continual_meta_test, conv_representation
from warpgrad.methods.continual.sequence_ewc import SequenceEWC
from warpgrad.methods.continual.warpgrad import ContinualWarpGrad, SequentialBaseline

__all__ = [
    "ContinualLearner",
    "SGDLearner",
    "EWC",
    "FISHER_KINDS",
    "ewc_penalty",
    "fisher_diagonal",
    "DHPLearner",
    "DHPNet",
    "DHPSoftmax",
    "hebbian_update",
    "plastic_logits",
    "OML",
    "ANML",
    "anml_networks",
    "conv_representation",
    "continual_meta_test",
    "ContinualWarpGrad",
    "SequentialBaseline",
    "SequenceEWC",
]
