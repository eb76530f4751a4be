"""The count model's distributions: congruent cells ``k`` out of ``n`` compared cells as a
beta-binomial (or binomial) law, fitted by penalised maximum likelihood (scipy), one law
for same-source pairs and one for different-source pairs."""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

__all__ = ["Law", "fit_law", "log10_pmf"]

_LN10 = math.log(10.0)
#: Smallest overdispersion kept (a beta-binomial this close to a binomial is one).
_RHO_MIN = 1e-6


def _ab(mu, rho):
    mu, rho = np.asarray(mu, float), np.asarray(rho, float)
    s = (1.0 - rho) / rho
    return mu * s, (1.0 - mu) * s


class Law(tuple):
    """``(mu, rho)``: mean congruent share and overdispersion (intra-pair correlation of
    the cells; 0 is a binomial law)."""

    __slots__ = ()

    def __new__(cls, mu: float, rho: float):
        return super().__new__(cls, (float(mu), float(rho)))

    @property
    def mu(self) -> float:
        return self[0]

    @property
    def rho(self) -> float:
        return self[1]


def log10_pmf(k, n, mu, rho) -> np.ndarray:
    """log10 P(k | n) under the laws ``(mu, rho)``; ``mu``/``rho`` may be arrays of shape
    (B,) against ``k``/``n`` of shape (m,), giving (B, m).

    Examples
    --------
    >>> from scipy import stats
    >>> float(log10_pmf(3, 10, 0.2, 0.0)) == float(stats.binom.logpmf(3, 10, 0.2) / math.log(10))
    True
    """
    k, n = np.asarray(k, float), np.asarray(n, float)
    mu, rho = np.asarray(mu, float), np.asarray(rho, float)
    if mu.ndim:
        k, n, mu, rho = k[None, ...], n[None, ...], mu[:, None], rho[:, None]
    binom = stats.binom.logpmf(k, n, np.clip(mu, 1e-300, 1.0))
    a, b = _ab(mu, np.maximum(rho, _RHO_MIN))
    bb = stats.betabinom.logpmf(k, n, a, b)
    return np.where(rho < _RHO_MIN * 2, binom, bb) / _LN10


def fit_law(k, n, weights=None, *, family: str = "betabinom") -> Law:
    """Penalised maximum-likelihood law of counts ``k`` of ``n``.

    The penalty is half a congruent and half a non-congruent cell of pseudo-data (a
    Beta(1.5, 1.5) prior on ``mu``), so that a set with no congruent cell at all still
    gives a positive rate, and a weak pull of ``rho`` away from 1. ``family="binomial"``
    fixes ``rho = 0``. ``weights`` (per pair, >= 0) come from the firearm resampling.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = np.full(4000, 100)
    >>> k = stats.betabinom.rvs(100, 6.0, 14.0, random_state=rng, size=4000)
    >>> law = fit_law(k, n)
    >>> round(law.mu, 2), round(law.rho, 3)  # truth: mu 0.3, rho 1/21 = 0.048
    (0.3, 0.046)
    """
    k = np.asarray(k, np.int64)
    n = np.asarray(n, np.int64)
    w = np.ones(len(k)) if weights is None else np.asarray(weights, float)
    keep = w > 0
    k, n, w = k[keep], n[keep], w[keep]
    if len(k) == 0:
        raise ValueError("fit_law: no pairs to fit")
    kn, inv = np.unique(np.stack([k, n], 1), axis=0, return_inverse=True)
    w = np.bincount(inv.ravel(), weights=w)
    uk, un = kn[:, 0].astype(float), kn[:, 1].astype(float)
    mu0 = (np.sum(w * uk) + 0.5) / (np.sum(w * un) + 1.0)
    if family == "binomial":
        return Law(mu0, 0.0)
    if family != "betabinom":
        raise ValueError(f"family must be 'betabinom' or 'binomial', got {family!r}")

    def nll(theta):
        mu, rho = special.expit(theta[0]), special.expit(theta[1])
        a, b = _ab(mu, max(rho, _RHO_MIN))
        ll = np.sum(w * stats.betabinom.logpmf(uk, un, a, b))
        prior = 0.5 * math.log(mu) + 0.5 * math.log1p(-mu) + 0.5 * math.log1p(-rho)
        return -(ll + prior)

    start = np.array([special.logit(mu0), special.logit(0.05)])
    best = optimize.minimize(
        nll, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000}
    )
    mu, rho = special.expit(best.x)
    # a binomial law is the limit rho -> 0: keep whichever fits better
    binom_nll = -np.sum(w * stats.binom.logpmf(uk, un, mu0)) - (
        0.5 * math.log(mu0) + 0.5 * math.log1p(-mu0)
    )
    if binom_nll <= best.fun or rho < _RHO_MIN * 2:
        return Law(mu0, 0.0)
    return Law(mu, rho)
