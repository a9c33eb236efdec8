"""Continual learners: a shared protocol (``train_experience``/``end_experience``/``predict``)."""

from warpgrad.methods.continual.base import ContinualLearner, SGDLearner
from warpgrad.methods.continual.dhp import DHPLearner, DHPNet, DHPSoftmax, hebbian_update, plastic_logits
from warpgrad.methods.continual.ewc import EWC, FISHER_KINDS, ewc_penalty, fisher_diagonal

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
]
