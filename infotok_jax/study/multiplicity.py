"""Statistics for a family of paired comparisons over few seeds: Holm's step-down adjustment, intervals at
the level Holm used for each cell, the paired probability of improvement, and the share of a paired
difference's variance that is evaluation sampling.

Why computed here rather than with rliable (Agarwal et al. 2021, the reference for few-seed reporting):
rliable 1.2.0 fails to import with the pandas 3 the project resolves (docs/study.md), and the statistics
needed are a few lines each: Holm (1979) on the paired t-tests' two-sided p-values, and rliable's
probability of improvement in its paired form (the fraction of seeds on which the treatment beats the
reference, ties counting half).

Interval construction (the one the verdicts read). Holm rejects the cells of ranks 1..r (p ascending)
where p_(j) <= alpha / (m - j + 1) for every j <= r. The cell of rank j <= r gets the t interval at
level 1 - alpha / (m - j + 1), the level of the step that rejected it; every cell Holm keeps gets the level
of the step where Holm stopped, 1 - alpha / (m - r). So an adjusted interval excludes 0 exactly when Holm
rejects that cell: the intervals and the test agree. The first step's level, alpha / m, is Bonferroni's;
an interval never uses a level laxer than Holm's own threshold for it. (Intervals with a guaranteed
simultaneous coverage and exact agreement with Holm exist, Strassburger & Bretz 2008, but the cells they
reject get an interval bounded only by 0, which reads worse; the Bonferroni intervals at alpha / m are
the ones with guaranteed simultaneous coverage and are stored beside these as `lo_bonf`, `hi_bonf`.)
A cell with fewer than 2 seeds has no test: it takes p = 1 and stays in m, so the family's size is
fixed by the protocol, not by which runs happen to exist.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats as scipy_stats

ALPHA = 0.05  # family-wise error rate of each claim's family


def t_test(diffs: Sequence[float]) -> float | None:
    """Two-sided p-value of the one-sample t test of mean(diffs) = 0 (None below 2 values; 0 spread:
    0.0 for a nonzero mean, 1.0 for a zero one)."""
    values = [float(d) for d in diffs]
    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    t = mean / (sd / math.sqrt(len(values)))
    return float(2 * scipy_stats.t.sf(abs(t), len(values) - 1))


def holm(p_values: Sequence[float | None], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Holm's step-down over the family: per cell (input order) the adjusted p-value
    max_{i <= rank} min(1, (m - i + 1) p_(i)), whether Holm rejects it at `alpha`, and the per-cell
    significance level of its interval (module docstring). None counts as p = 1."""
    p = [1.0 if v is None else float(v) for v in p_values]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    rejected_count = 0
    for rank, i in enumerate(order):
        if p[i] > alpha / (m - rank):
            break
        rejected_count = rank + 1
    out: list[dict[str, Any]] = [{} for _ in p]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        reject = rank < rejected_count
        level = alpha / (m - rank) if reject else alpha / (m - rejected_count)
        out[i] = {"p_holm": running, "reject": reject, "level": level, "rank": rank + 1}
    return out


def t_bounds(diffs: Sequence[float], level: float) -> tuple[float | None, float | None]:
    """The two-sided t interval of mean(diffs) at significance `level` (None, None below 2 values)."""
    values = [float(d) for d in diffs]
    if len(values) < 2:
        return None, None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(scipy_stats.t.ppf(1 - level / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return mean - half, mean + half


def probability_of_improvement(diffs: Sequence[float]) -> float | None:
    """Paired probability of improvement: the fraction of seeds with treatment > reference, ties half.
    No interval: a bootstrap over 3 seeds has 10 distinct resamples and says nothing (docs/study.md)."""
    if not diffs:
        return None
    return sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs) / len(diffs)


def family(diffs_per_cell: Sequence[Sequence[float]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every cell of a family: n, mean, raw 95% interval, p, Holm-adjusted p and decision, the interval at
    Holm's level for the cell (`lo_adj`, `hi_adj`), the Bonferroni interval, the probability of
    improvement and the per-seed differences."""
    p_values = [t_test(d) for d in diffs_per_cell]
    adjusted = holm(p_values, alpha)
    m = len(diffs_per_cell)
    cells = []
    for diffs, p, adj in zip(diffs_per_cell, p_values, adjusted, strict=True):
        values = [float(d) for d in diffs]
        lo, hi = t_bounds(values, alpha)
        lo_adj, hi_adj = t_bounds(values, adj["level"])
        lo_bonf, hi_bonf = t_bounds(values, alpha / m)
        cells.append(
            {
                "n": len(values),
                "mean": statistics.fmean(values) if values else None,
                "lo": lo,
                "hi": hi,
                "p": p,
                **adj,
                "reject": adj["reject"] and p is not None,
                "lo_adj": lo_adj,
                "hi_adj": hi_adj,
                "lo_bonf": lo_bonf,
                "hi_bonf": hi_bonf,
                "prob_improvement": probability_of_improvement(values),
                "diffs": values,
            }
        )
    return cells


def binomial_variance(p: float, n: int) -> float:
    """Sampling variance of a proportion p measured on n independent examples."""
    return p * (1 - p) / n


def sampling_share(sampling_variances: Sequence[float], diffs: Sequence[float]) -> dict[str, Any] | None:
    """The evaluation-sampling part of a paired difference's variance: the mean over seeds of the
    sampling-variance bound of d_s (sum of its terms' binomial variances) over the observed across-seed
    variance of d (None below 2 seeds). The bound assumes independent errors; the arms of a pair are scored
    on the same examples, whose errors correlate positively, so the true sampling part is smaller."""
    if len(diffs) < 2:
        return None
    observed = statistics.variance([float(d) for d in diffs])
    sampling = statistics.fmean(sampling_variances)
    return {
        "sampling": sampling,
        "observed": observed,
        "share": sampling / observed if observed else math.inf,
    }
