"""Analysis of learned representations: representational similarity (RDMs, RSA, HSIC, CKA),
linear probes and representational forgetting, and ``warpgrad analyze`` (:mod:`.representations`)."""

from warpgrad.analysis.probes import features, probe_accuracy, probe_matrix, representational_forgetting
from warpgrad.analysis.similarity import METRICS, hsic, linear_cka, rbf_cka, rdm, rsa

__all__ = [
    "METRICS",
    "features",
    "hsic",
    "linear_cka",
    "probe_accuracy",
    "probe_matrix",
    "rbf_cka",
    "rdm",
    "representational_forgetting",
    "rsa",
]
