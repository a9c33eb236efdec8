"""Analysis of learned representations: representational similarity (RDMs, RSA, HSIC, CKA)."""

from warpgrad.analysis.similarity import METRICS, hsic, linear_cka, rbf_cka, rdm, rsa

__all__ = ["METRICS", "rdm", "rsa", "hsic", "linear_cka", "rbf_cka"]
