"""The claims of `claim_families.CLAIMS` decided from the committed result files: every cell of a
claim's family with its raw and Holm-adjusted intervals, the paired probability of improvement, the
share of the paired variance that is evaluation sampling, and the verdict by the claim's stated rule.

A cell's value at seed s is the sum of its terms (sign x metric of one run of the same host and seed),
defined only when every term's run has a result that counts toward claims (`provenance.eligibility`);
results that do not are left out and listed. Statistics: `multiplicity.family` over all the family's
cells (cells without 2 seeds count in the family's size).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from infotok_jax.study import claim_families, multiplicity, protocol, provenance

SEEDS = tuple(range(20))  # seeds looked for; a cell uses those whose runs all have counting results


def _run_names(claim: claim_families.Claim, study: str) -> dict[tuple[str, str, str, int], str]:
    """(host, arm, label, seed) -> run name, for the claim's sweep under the budget of `study`."""
    from infotok_jax.study import slices

    budget = slices.BUDGETS[study]
    hosts = sorted({c.host for c in claim.family})
    runs = protocol.plan(
        claim.sweep, hosts, protocol.ARMS, SEEDS, budget.steps, budget.extra, budget.overrides
    )
    return {(r.host, r.arm, str(r.value), r.seed): r.name for r in runs}


def load_study(results_dir: pathlib.Path, study: str) -> tuple[dict[str, dict], dict[str, str]]:
    """({run name: eval metrics} of the results that count toward claims, {run name: why excluded})."""
    counting, excluded = {}, {}
    for path in sorted((pathlib.Path(results_dir) / study).glob("*.json")):
        result = json.loads(path.read_text())
        ok, why = provenance.eligibility(result, path)
        if ok:
            counting[path.stem] = result["eval"]["files"]["metrics.json"]
        else:
            excluded[path.stem] = why
    return counting, excluded


def cell_seeds(
    cell: claim_families.Cell, names: dict[tuple[str, str, str, int], str], metrics: dict[str, dict]
) -> dict[int, dict[str, Any]]:
    """seed -> {"value": the cell's contrast, "terms": [(metric value, count)]} for the seeds whose every
    term's run has a counting result holding the metric."""
    out = {}
    for seed in SEEDS:
        values = []
        for term in cell.terms:
            name = names.get((cell.host, term.arm, term.label, seed))
            scores = metrics.get(name) if name else None
            key = term.metric or cell.endpoint
            if scores is None or scores.get(key) is None:
                break
            count_key = claim_families.ENDPOINT_COUNTS.get(key.replace(claim_families.SHIFT_SPLIT, "test", 1))
            if count_key:
                count_key = key.split("/", 1)[0] + "/" + count_key.split("/", 1)[1]
            values.append((term.sign, float(scores[key]), scores.get(count_key) if count_key else None))
        else:
            out[seed] = {"value": sum(sign * v for sign, v, _ in values), "terms": values}
    return out


def _sampling_variance(terms: Sequence[tuple[int, float, Any]]) -> float | None:
    """Sum of the terms' binomial sampling variances (None when a term has no count)."""
    if any(n is None for *_, n in terms):
        return None
    return sum(multiplicity.binomial_variance(v, int(n)) for _, v, n in terms)


def evaluate(claim: claim_families.Claim, study: str, results_dir: pathlib.Path) -> dict[str, Any]:
    """The claim at `study`: per cell the family statistics and sampling share, the verdict, and the
    results left out of it."""
    metrics, excluded = load_study(results_dir, study)
    names = _run_names(claim, study)
    per_cell = [cell_seeds(c, names, metrics) for c in claim.family]
    planned = [claim_families.planned_seeds(study, c) for c in claim.family]
    # a cell is tested on its planned seeds 0..n-1 once they all exist, never on more; short of them it
    # enters the family untested (it still counts in Holm's m)
    tested = [
        [seeds[s]["value"] for s in range(n)] if all(s in seeds for s in range(n)) else []
        for seeds, n in zip(per_cell, planned, strict=True)
    ]
    stats = multiplicity.family(tested)
    cells = []
    for cell, seeds, stat, cell_tested, n_planned in zip(
        claim.family, per_cell, stats, tested, planned, strict=True
    ):
        if not cell_tested:  # described, not tested
            raw = multiplicity.family([[s["value"] for s in seeds.values()]])[0]
            stat = {**stat, **{k: raw[k] for k in ("n", "mean", "lo", "hi", "prob_improvement", "diffs")}}
        variances = [_sampling_variance(s["terms"]) for s in seeds.values()]
        share = None
        if variances and None not in variances:
            share = multiplicity.sampling_share(variances, [s["value"] for s in seeds.values()])
        cells.append(
            {
                "host": cell.host,
                "name": cell.name,
                "endpoint": cell.endpoint,
                "seeds": sorted(seeds),
                **stat,
                "planned_n": n_planned,
                "pending": not cell_tested,
                "sampling": share,
            }
        )
    used = {
        names[(c.host, t.arm, t.label, s)]
        for c in claim.family
        for t in c.terms
        for s in SEEDS
        if (c.host, t.arm, t.label, s) in names
    }
    return {
        "claim": claim.key,
        "statement": claim.statement,
        "study": study,
        "rule": claim.rule_text,
        "endpoints": list(claim.endpoints),
        "cells": cells,
        "verdict": VERDICT_RULES[claim.rule](cells),
        "excluded": {n: why for n, why in sorted(excluded.items()) if n in used},
        "sampling_by_endpoint": _pooled_sampling(cells),
    }


def _pooled_sampling(cells: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per endpoint: mean sampling-variance bound over mean observed variance of the cells measured."""
    out = {}
    for endpoint in dict.fromkeys(c["endpoint"] for c in cells):
        parts = [c["sampling"] for c in cells if c["endpoint"] == endpoint and c["sampling"]]
        if parts:
            sampling = sum(p["sampling"] for p in parts) / len(parts)
            observed = sum(p["observed"] for p in parts) / len(parts)
            out[endpoint] = {"sampling": sampling, "observed": observed, "share": sampling / observed}
    return out


def _tested(cells):
    return [c for c in cells if not c["pending"] and c["n"] >= 2]


def _above(cells):
    return [c for c in _tested(cells) if c["lo_adj"] > 0]


def _below(cells):
    return [c for c in _tested(cells) if c["hi_adj"] < 0]


def _names(cells) -> str:
    return "; ".join(f"{c['host']} {c['name']} ({short_endpoint(c['endpoint'])})" for c in cells)


def short_endpoint(endpoint: str) -> str:
    """The endpoints' metric keys in words (understanding, generation, shift drop); others as they are."""
    return {
        claim_families.UNDERSTANDING: "understanding",
        claim_families.GENERATION: "generation",
        claim_families.SHIFTED_UNDERSTANDING: "shift drop",
    }.get(endpoint, endpoint)


def _any_above(cells) -> str:
    if not _tested(cells):
        return "untested (no cell has its planned seeds yet)"
    above, below = _above(cells), _below(cells)
    verdict = (
        f"supported in {len(above)} of {len(cells)} cells: {_names(above)}" if above else "not supported"
    )
    return verdict + (f"; reversed: {_names(below)}" if below else "")


def _all_hosts(cells) -> str:
    if not _tested(cells):
        return "untested (no cell has its planned seeds yet)"
    hosts = {c["host"] for c in cells}
    above = _above(cells)
    for arm in dict.fromkeys(c["name"].split(" ")[0] for c in cells):
        if {c["host"] for c in above if c["name"].startswith(arm + " ")} == hosts:
            return f"supported for {arm}"
    return "not supported" + (f" (above 0 only in: {_names(above)})" if above else "")


def _same_sign(cells) -> str:
    if not _tested(cells):
        return "untested (no cell has its planned seeds yet)"
    above, below = _above(cells), _below(cells)
    if above and below:
        return f"host-dependent: above 0 in {_names(above)}; below 0 in {_names(below)}"
    if above:
        return f"supported: {_names(above)}"
    if below:
        return f"reversed: {_names(below)}"
    return "not resolved: every adjusted interval contains 0"


VERDICT_RULES: dict[str, Callable[[Sequence[dict[str, Any]]], str]] = {
    "any_above": _any_above,
    "all_hosts": _all_hosts,
    "same_sign": _same_sign,
}


def _interval(lo: float | None, hi: float | None, digits: int = 3) -> str:
    return "—" if lo is None else f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(decided: Sequence[dict[str, Any]]) -> str:
    """The claims as Markdown: per claim its rule, verdict and every cell of its family."""
    level = round(100 * (1 - multiplicity.ALPHA))
    lines = [
        "## Claims (claim_families.CLAIMS)",
        "",
        f"Per cell: mean paired contrast over seeds, raw {level}% t interval, the interval at Holm's "
        f"level for the cell (family-wise {level}%: `adjusted`, with its per-cell level), two-sided p "
        "and Holm-adjusted p, the paired probability of improvement (fraction of seeds with contrast "
        "> 0, ties half; no interval at this n), and the sampling share (binomial bound of the "
        "evaluation-sampling variance over the observed across-seed variance; an upper bound). "
        "* = Holm rejects: the adjusted interval excludes 0. Every cell of a family is shown. A cell is "
        "decided only at its planned seed count (seeds column: n / planned); until then it is pending: "
        "described, untested, and still counted in its family's Holm adjustment.",
    ]
    for d in decided:
        lines += [
            "",
            f"### {d['statement']} (`{d['study']}`)",
            "",
            f"Primary endpoint(s): {', '.join(short_endpoint(e) for e in d['endpoints'])} (test split). "
            f"Family: the {len(d['cells'])} cells below. Rule: {d['rule']}",
            "",
            f"**Verdict: {d['verdict']}**",
            "",
            "| host | cell | endpoint | seeds | mean | raw interval | adjusted interval (level) | p | p Holm "
            "| P(improve) | sampling share |",
            "|" + " --- |" * 11,
        ]
        for c in d["cells"]:
            mean = "—" if c["mean"] is None else f"{c['mean']:+.3f}"
            adjusted = _interval(c["lo_adj"], c["hi_adj"])
            if c["lo_adj"] is not None:
                adjusted += f" ({1 - c['level']:.4f}){' *' if c['reject'] else ''}"
            prob = "—" if c["prob_improvement"] is None else f"{c['prob_improvement']:.2f}"
            share = "—" if not c["sampling"] else f"{c['sampling']['share']:.2f}"
            lines.append(
                f"| {c['host']} | {c['name']} | {short_endpoint(c['endpoint'])} | {c['n']} / {c['planned_n']}"
                f"{' pending' if c['pending'] else ''} | {mean} | "
                f"{_interval(c['lo'], c['hi'])} | {adjusted} | {_p(c['p'])} | {_p(c['p_holm'])} | {prob} | "
                f"{share} |"
            )
        pooled = d["sampling_by_endpoint"]
        if pooled:
            parts = ", ".join(f"{short_endpoint(k)} {v['share']:.2f}" for k, v in pooled.items())
            limit = claim_families.SAMPLING_MATERIAL_SHARE
            material = [short_endpoint(k) for k, v in pooled.items() if v["share"] > limit]
            lines += [
                "",
                f"Sampling share pooled over the cells, per endpoint: {parts}; material (above {limit:.2f}, "
                f"fixed before computing it) for: {', '.join(material) or 'none'}.",
            ]
        if d["excluded"]:
            lines += [
                "",
                "Excluded from this claim (re-run them): "
                + "; ".join(f"`{n}` ({why})" for n, why in d["excluded"].items()),
            ]
    return "\n".join(lines) + "\n"


def claims_of_study(study: str) -> list[claim_families.Claim]:
    """The claims decided on the result files of `study`."""
    return [c for c in claim_families.CLAIMS if study in c.studies]
