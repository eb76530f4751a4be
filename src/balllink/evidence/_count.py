"""The count model's distributions: congruent cells ``k`` out of ``n`` compared cells as a
beta-binomial law, a binomial law, or a mixture of two beta-binomial laws, fitted by
penalised maximum likelihood (scipy), one law for same-source pairs and one for
different-source pairs.

A law is kept as a list of components ``[weight, mu, rho]``: ``mu`` is the mean share of
congruent cells and ``rho`` the overdispersion (the correlation of the cells of one pair;
0 is a binomial law). Same-source pairs are a mixture of populations (crisp marks, worn or
poorly marking firearms, other ammunition), which one beta-binomial law can only cover by
a very large ``rho`` that blurs every count; two components describe them better.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

__all__ = ["FAMILIES", "as_law", "fit_law", "law_mean", "log10_pmf", "stack_laws"]

_LN10 = math.log(10.0)
#: Smallest overdispersion kept (a beta-binomial this close to a binomial is one).
_RHO_MIN = 1e-6
#: Bounds of the fitted logits (shares and overdispersions from about 1e-7 to 1 - 1e-7).
_BOUND = (-16.0, 16.0)
#: Law families of `fit_law`.
FAMILIES = ("betabinom", "binomial", "mixture", "auto")


def as_law(law) -> np.ndarray:
    """A law as a (components, 3) array of ``[weight, mu, rho]``; a bare ``(mu, rho)`` is a
    one-component law.

    Examples
    --------
    >>> as_law([0.2, 0.0]).tolist()
    [[1.0, 0.2, 0.0]]
    """
    a = np.asarray(law, float)
    if a.ndim == 1 and a.size == 2:
        return np.array([[1.0, a[0], a[1]]])
    return a.reshape(-1, 3)


def law_mean(law) -> float:
    """Mean share of congruent cells of a law."""
    a = as_law(law)
    return float(np.sum(a[:, 0] * a[:, 1]))


def _ab(mu, rho):
    s = (1.0 - rho) / rho
    return mu * s, (1.0 - mu) * s


def _log_components(k, n, mu, rho):
    """ln P(k | n) per component; arrays broadcast."""
    binom = stats.binom.logpmf(k, n, np.clip(mu, 1e-300, 1.0))
    a, b = _ab(mu, np.maximum(rho, _RHO_MIN))
    return np.where(rho < _RHO_MIN * 2, binom, stats.betabinom.logpmf(k, n, a, b))


def log10_pmf(k, n, law) -> np.ndarray:
    """log10 P(k | n) under ``law`` (`as_law`), or under each of a stack of laws of shape
    (B, components, 3) (components padded with weight 0), giving (B, m).

    Examples
    --------
    >>> from scipy import stats
    >>> float(log10_pmf(3, 10, [0.2, 0.0])[0]) == float(stats.binom.logpmf(3, 10, 0.2) / math.log(10))
    True
    >>> mix = [[0.5, 0.1, 0.0], [0.5, 0.7, 0.0]]
    >>> p = 0.5 * stats.binom.pmf(4, 10, 0.1) + 0.5 * stats.binom.pmf(4, 10, 0.7)
    >>> bool(np.isclose(10 ** log10_pmf(4, 10, mix), p))
    True
    """
    k = np.atleast_1d(np.asarray(k, float))
    n = np.atleast_1d(np.asarray(n, float))
    stack = np.asarray(law, float)
    single = stack.ndim < 3
    if single:
        stack = as_law(stack)[None]
    w, mu, rho = (stack[..., i][..., None] for i in range(3))  # (B, C, 1)
    lp = _log_components(k[None, None, :], n[None, None, :], mu, rho)
    with np.errstate(divide="ignore"):
        lw = np.log(w)
    out = special.logsumexp(lp + lw, axis=1) / _LN10  # (B, m)
    return out[0] if single else out


def _prior(mu, rho) -> float:
    """Half a congruent and half a non-congruent pseudo-cell per component (a Beta(1.5,
    1.5) prior on ``mu``: a set with no congruent cell still gets a positive rate) and a
    weak pull of ``rho`` away from 1."""
    return float(np.sum(0.5 * np.log(mu) + 0.5 * np.log1p(-mu) + 0.5 * np.log1p(-rho)))


def _fit_single(uk, un, w, mu0):
    def nll(theta):
        mu, rho = special.expit(theta)
        return -(np.sum(w * _log_components(uk, un, mu, rho)) + _prior(mu, rho))

    start = np.array([special.logit(mu0), special.logit(0.05)])
    best = optimize.minimize(nll, start, method="L-BFGS-B", bounds=[_BOUND] * 2)
    mu, rho = special.expit(best.x)
    binom = -np.sum(w * stats.binom.logpmf(uk, un, mu0)) - _prior(mu0, 0.0)
    if binom <= best.fun or rho < _RHO_MIN * 2:
        return [[1.0, float(mu0), 0.0]], float(binom)
    return [[1.0, float(mu), float(rho)]], float(best.fun)


def _fit_mixture(uk, un, w, start_law=None):
    share = uk / np.maximum(un, 1)
    hi, lo = np.average(share, weights=w) + 0.2, np.average(share, weights=w) - 0.2
    lo_q, hi_q = np.clip([lo, hi], 0.02, 0.98)

    def unpack(theta):
        v = special.expit(theta)
        return v[0], v[1:3], v[3:5]  # weight of the first component, (mu1, mu2), (rho1, rho2)

    def nll(theta):
        p, mu, rho = unpack(theta)
        lp = _log_components(uk[None, :], un[None, :], mu[:, None], rho[:, None])
        mix = special.logsumexp(lp + np.log([[p], [1.0 - p]]), axis=0)
        return -(np.sum(w * mix) + _prior(mu, rho) + 0.5 * math.log(p) + 0.5 * math.log1p(-p))

    start = special.logit(np.array([0.5, hi_q, lo_q, 0.05, 0.05]))
    if start_law is not None and len(start_law) == 2:  # warm start (a refit on resampled data)
        (p1, m1, r1), (_, m2, r2) = start_law
        start = special.logit(np.clip([p1, m1, m2, max(r1, 1e-3), max(r2, 1e-3)], 1e-6, 1 - 1e-6))
    best = optimize.minimize(nll, start, method="L-BFGS-B", bounds=[_BOUND] * 5)
    p, mu, rho = unpack(best.x)
    comps = sorted(
        [[float(p), float(mu[0]), float(rho[0])], [float(1 - p), float(mu[1]), float(rho[1])]],
        key=lambda c: -c[1],
    )
    return comps, float(best.fun)


def fit_law(k, n, weights=None, *, family: str = "betabinom", start=None) -> list[list[float]]:
    """Penalised maximum-likelihood law of counts ``k`` of ``n`` (components
    ``[weight, mu, rho]``).

    ``family``: ``"betabinom"`` (one component, or a binomial law when that fits as well),
    ``"binomial"``, ``"mixture"`` (two beta-binomial components) or ``"auto"`` (the
    mixture when it lowers the Bayesian information criterion). ``weights`` (per pair,
    >= 0) come from the firearm resampling; ``start`` (a law) warm-starts the search.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = np.full(4000, 100)
    >>> k = stats.betabinom.rvs(100, 6.0, 14.0, random_state=rng, size=4000)
    >>> [round(v, 2) for v in fit_law(k, n)[0]]  # truth: mu 0.3, rho 1/21 = 0.048
    [1.0, 0.3, 0.05]
    >>> k2 = np.r_[k[:2000], stats.binom.rvs(100, 0.9, random_state=rng, size=2000)]
    >>> [[round(v, 2) for v in c] for c in fit_law(k2, n, family="auto")]
    [[0.5, 0.9, 0.0], [0.5, 0.29, 0.05]]
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
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
        return [[1.0, float(mu0), 0.0]]
    single, nll1 = _fit_single(uk, un, w, mu0)
    if family == "betabinom":
        return single
    mix, nll2 = _fit_mixture(uk, un, w, start)
    if family == "mixture":
        return mix
    n_eff = math.log(max(float(np.sum(w)), 2.0))
    return mix if 2 * nll2 + 5 * n_eff < 2 * nll1 + 2 * n_eff else single


def stack_laws(laws) -> np.ndarray:
    """Laws as one (B, components, 3) array, padded with components of weight 0."""
    arrs = [as_law(x) for x in laws]
    c = max(len(a) for a in arrs)
    out = np.zeros((len(arrs), c, 3))
    out[:, :, 1] = 0.5  # a valid (unused) share for the padding
    for i, a in enumerate(arrs):
        out[i, : len(a)] = a
    return out
