"""Paired statistics over seeds: is a difference between two arms real, and how large a one could this run see?

Both arms of a seed share the initial weights and the batches' seed, so the per-seed difference cancels what a
seed does to both; its mean gets a Student t interval over the seeds. The minimum detectable difference is the
true paired difference this many seeds, at this spread, would find significant (two-sided 5%) with 80% power:
(t_{0.975, n-1} + t_{0.80, n-1}) * sd / sqrt(n).
"""

from __future__ import annotations

import math

import numpy as np


def _t_quantile(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def paired_interval(differences, level: float = 0.95, power: float = 0.8) -> dict:
    """Mean of per-seed paired differences with its Student t interval and the minimum detectable difference.

    For one seed there is no spread: sd, the interval and the detectable difference are None.

    >>> r = paired_interval([0.01, 0.03])
    >>> round(r["mean"], 3), round(r["low"], 3), round(r["high"], 3)
    (0.02, -0.107, 0.147)
    """
    d = np.asarray(list(differences), dtype=float)
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else float("nan"), "sd": None, "low": None, "high": None,
           "detectable": None, "level": level}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t = _t_quantile(0.5 + level / 2, n - 1)
    out.update(sd=sd, low=out["mean"] - t * se, high=out["mean"] + t * se,
               detectable=(t + _t_quantile(power, n - 1)) * se)
    return out


def describe(stat: dict, scale: float = 100.0) -> str:
    """'+1.2 points (95% CI -0.3 to +2.7, n = 5; detectable 2.1)' or '+1.2 points (one seed)'."""
    mean = f"{stat['mean'] * scale:+.1f}"
    if stat["sd"] is None:
        return f"{mean} (one seed)"
    return (f"{mean} ({stat['level']:.0%} CI {stat['low'] * scale:+.1f} to {stat['high'] * scale:+.1f}, "
            f"n = {stat['n']}; detectable {stat['detectable'] * scale:.1f})")
