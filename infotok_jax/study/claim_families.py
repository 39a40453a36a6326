"""The study's claims, fixed before the runs of the sequential plan (issue 25): each claim's primary
endpoints, its family of comparisons (the cells Holm adjusts over together), its verdict rule, and the
plan that adds seeds where a decision is open. Data only; `claims.py` evaluates it on result files."""

from __future__ import annotations

import dataclasses

from infotok_jax.study.protocol import CAPACITY_TOKENS, HOSTS, capacity_label

# ---- The claims, their endpoints and families, fixed before the runs of the sequential plan (issue 25).
# A claim is decided on its family of cells; each cell is a linear contrast of runs of one host and seed
# (`Term`s), so a paired difference (2 terms), a difference of gains (4) and a difference of drops under
# a nuisance shift (4) are all the same computation (study/claims.py). The family's multiplicity is
# Holm's over all its cells, counting the cells without runs (study/multiplicity.py).
UNDERSTANDING = "test/understanding/accuracy"  # primary endpoint: test understanding accuracy
GENERATION = "test/generation/all_correct"  # primary endpoint: test generation all-correct
# The count each proportion endpoint is measured on (for its binomial sampling variance).
ENDPOINT_COUNTS = {
    UNDERSTANDING: "test/understanding/num_examples",
    GENERATION: "test/generation/num_prompts",
}
SHIFT_NUISANCE = 1.0  # the nuisance the shift evaluation scores at (training: the config's 0.5)
SHIFT_SPLIT = f"test_nuisance{SHIFT_NUISANCE:g}"  # its metrics' prefix (evaluate: config.evaluation)
SHIFTED_UNDERSTANDING = f"{SHIFT_SPLIT}/understanding/accuracy"
# Evaluation sampling counts as material when the binomial bound on its variance is more than this share
# of the observed across-seed variance of the paired differences (pooled over a claim's cells of one
# endpoint at B). Fixed before computing it; when it holds, runs from then on score the whole test split
# (slices.BUDGETS["cpu2400full"]).
SAMPLING_MATERIAL_SHARE = 0.20
HEADLINE = {
    "none": "baseline",
    "supervised": "supervised: probe + contrastive",
    "hsic": "hsic: full",
    "vib": "vib: full",
}  # the controls sweep's label of each arm's main run
B_STUDIES = ("cpu2400", "cpu2400full")  # the main table's budget B, scored on 512 or all 2000 examples


@dataclasses.dataclass(frozen=True)
class Term:
    """sign x metric of the run of `arm` with variant label `label` (same host and seed as the cell);
    `metric` empty: the cell's endpoint."""

    arm: str
    label: str
    sign: int = 1
    metric: str = ""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One comparison of a claim's family on one host: sum of its terms per seed."""

    host: str
    name: str
    endpoint: str
    terms: tuple[Term, ...]


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the README claims table: its endpoints, its family of cells, the studies and sweep
    whose result files it reads, and the verdict rule (`claims.VERDICT_RULES`, stated in `rule_text`)."""

    key: str
    statement: str
    studies: tuple[str, ...]
    sweep: str
    endpoints: tuple[str, ...]
    family: tuple[Cell, ...]
    rule: str
    rule_text: str


def versus(host: str, arm: str, ref: str, endpoint: str) -> Cell:
    ref_name = "baseline" if ref == "none" else ("supervised control" if ref == "supervised" else ref)
    return Cell(
        host,
        f"{arm} - {ref_name}",
        endpoint,
        (Term(arm, HEADLINE[arm]), Term(ref, HEADLINE[ref], -1)),
    )


def gain_contrast(host: str, arm: str, ref: str, a: str, b: str, endpoint: str, name: str) -> Cell:
    """(arm - ref) at capacity point a minus (arm - ref) at point b."""
    terms = (Term(arm, a), Term(ref, a, -1), Term(arm, b, -1), Term(ref, b))
    return Cell(host, name, endpoint, terms)


def shift_drop(host: str, arm: str, ref: str) -> Cell:
    """How much less the arm's understanding drops than the reference's when scored at the shifted
    nuisance: (arm shifted - arm) - (ref shifted - ref); > 0 = more robust."""
    a, r = HEADLINE[arm], HEADLINE[ref]
    terms = (
        Term(arm, a, 1, SHIFTED_UNDERSTANDING),
        Term(arm, a, -1, UNDERSTANDING),
        Term(ref, r, -1, SHIFTED_UNDERSTANDING),
        Term(ref, r, 1, UNDERSTANDING),
    )
    return Cell(
        host, f"{arm} - {'baseline' if ref == 'none' else 'supervised control'}", SHIFTED_UNDERSTANDING, terms
    )


_IB = ("hsic", "vib")
_ABOVE = "supported where a cell's Holm-adjusted interval lies wholly above 0 (those cells named); "
_RULE_ANY = _ABOVE + "cells wholly below 0 are named as reversed; otherwise not supported."
_FEW, _MANY = min(CAPACITY_TOKENS), max(CAPACITY_TOKENS)
_P = capacity_label
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "understanding",
        "understanding improves (over the baseline)",
        B_STUDIES,
        "controls",
        (UNDERSTANDING,),
        tuple(versus(h, a, "none", UNDERSTANDING) for h in HOSTS for a in _IB),
        "any_above",
        _RULE_ANY,
    ),
    Claim(
        "generation",
        "generation improves (over the baseline)",
        B_STUDIES,
        "controls",
        (GENERATION,),
        tuple(versus(h, a, "none", GENERATION) for h in HOSTS for a in _IB),
        "any_above",
        _RULE_ANY,
    ),
    Claim(
        "beyond_supervision",
        "gains beyond the supervision the terms carry (IB arm - supervised control)",
        B_STUDIES,
        "controls",
        (UNDERSTANDING, GENERATION),
        tuple(versus(h, a, "supervised", e) for h in HOSTS for a in _IB for e in (UNDERSTANDING, GENERATION)),
        "any_above",
        _RULE_ANY,
    ),
    Claim(
        "three_hosts",
        "on three hosts (the gain beyond the supervised control holds on every host)",
        B_STUDIES,
        "controls",
        (UNDERSTANDING, GENERATION),
        tuple(versus(h, a, "supervised", e) for h in HOSTS for a in _IB for e in (UNDERSTANDING, GENERATION)),
        "all_hosts",
        "supported when for one IB arm, on every host, the Holm-adjusted interval of understanding or "
        "generation lies wholly above 0; otherwise not supported.",
    ),
    Claim(
        "hsic_vs_vib",
        "HSIC better than VIB",
        B_STUDIES,
        "controls",
        (UNDERSTANDING, GENERATION),
        tuple(versus(h, "hsic", "vib", e) for h in HOSTS for e in (UNDERSTANDING, GENERATION)),
        "same_sign",
        "supported when some cell's Holm-adjusted interval lies wholly above 0 and none wholly below; "
        "host-dependent when both occur; reversed when only below; otherwise not resolved.",
    ),
    Claim(
        "capacity",
        "gains grow with nuisance / fewer tokens (AR, cpu600)",
        ("cpu600",),
        "capacity",
        (UNDERSTANDING, GENERATION),
        tuple(
            gain_contrast("ar", a, "none", pa, pb, e, f"{a}: {what}")
            for a in _IB
            for what, pa, pb in (
                (f"nuisance 1 vs 0 at {_FEW} tokens", _P(_FEW, 1.0), _P(_FEW, 0.0)),
                (f"nuisance 1 vs 0 at {_MANY} tokens", _P(_MANY, 1.0), _P(_MANY, 0.0)),
                (f"{_FEW} vs {_MANY} tokens at nuisance 0.5", _P(_FEW, 0.5), _P(_MANY, 0.5)),
            )
            for e in (UNDERSTANDING, GENERATION)
        ),
        "any_above",
        _RULE_ANY,
    ),
    Claim(
        "capacity_bottleneck",
        "the fewer-tokens gain is the bottleneck's (IB gain at 16 vs 64 tokens beyond the supervised "
        "control's, AR, cpu600)",
        ("cpu600",),
        "capacity",
        (UNDERSTANDING, GENERATION),
        tuple(
            gain_contrast(
                "ar",
                a,
                "supervised",
                _P(_FEW, 0.5),
                _P(_MANY, 0.5),
                e,
                f"{a} - supervised: {_FEW} vs {_MANY} tokens",
            )
            for a in _IB
            for e in (UNDERSTANDING, GENERATION)
        ),
        "any_above",
        _RULE_ANY,
    ),
    Claim(
        "nuisance_shift",
        f"robust to a nuisance shift (trained at 0.5, scored at {SHIFT_NUISANCE:g}: the IB arm's "
        "understanding drops less than the reference's)",
        ("cpu2400full",),
        "controls",
        (SHIFTED_UNDERSTANDING,),
        tuple(shift_drop(h, a, r) for h in HOSTS for a in _IB for r in ("none", "supervised")),
        "any_above",
        _RULE_ANY,
    ),
    Claim(
        "no_extra_data",
        "no extra data (privileged attribute labels as Y - the label-free default, HSIC, AR, cpu600)",
        ("cpu600",),
        "controls",
        (UNDERSTANDING, GENERATION),
        tuple(
            Cell(
                "ar",
                "hsic privileged Y - label-free",
                e,
                (Term("hsic", "hsic: privileged Y (attributes)"), Term("hsic", HEADLINE["hsic"], -1)),
            )
            for e in (UNDERSTANDING, GENERATION)
        ),
        "any_above",
        "the default is label-free by construction; the cells say what privileged labels would add "
        "(supported = they add something, read as the label-free default leaving gains on the table).",
    ),
)
CLAIMS_BY_KEY = {c.key: c for c in CLAIMS}


@dataclasses.dataclass(frozen=True)
class PlannedContrast:
    """A contrast the sequential plan adds seeds to: the cell `cell` of claim `claim` (host, name,
    endpoint) at `study`, to `seeds` seeds."""

    claim: str
    host: str
    cell: str
    endpoint: str
    study: str
    seeds: tuple[int, ...]


# The sequential plan, fixed before any of its runs (issue 25). Design: a fixed n of 10 seeds per
# contrast, analysed once, when all 10 pairs exist, in the claim's full Holm family (no interim look, so
# no alpha is spent on stopping early); seeds 0-9 at `cpu2400full` (the whole 2000-example test split and
# the nuisance-shift evaluation; the 3 seeds at `cpu2400` scored 512 examples and stay a study of their
# own). The three contrasts are those whose 3-seed interval straddled the decision at B.
PLAN_SEEDS = tuple(range(10))
SEQUENTIAL_PLAN = (
    PlannedContrast(
        "beyond_supervision", "ar", "vib - supervised control", GENERATION, "cpu2400full", PLAN_SEEDS
    ),
    PlannedContrast(
        "beyond_supervision", "continuous", "hsic - supervised control", GENERATION, "cpu2400full", PLAN_SEEDS
    ),
    PlannedContrast("understanding", "masked", "hsic - baseline", UNDERSTANDING, "cpu2400full", PLAN_SEEDS),
)
# A cell is decided only once it has its planned seeds (amendment of 2026-12-06, before any run of the
# plan): the protocol's 3, or the plan's 10 for its contrasts at their study. Until then it is shown as
# pending and its family still counts it (Holm over all cells), since a t interval on 1 or 2 df swings
# between verdicts as seeds arrive (the capacity control read "reversed" at n = 2, not at n = 3).
# Second amendment (2026-12-07, at 8 of the first contrast's 10 seeds): every cell whose runs are all
# runs of one planned contrast (its other endpoint, the nuisance-shift cells) is planned at that
# contrast's 10 seeds too, since the plan fixes how many of those runs exist; at 3 it was read at every
# seed from the 3rd to the 10th (interim looks the plan rules out). A cell is decided on its planned
# seeds 0..n-1, never on more.
CELL_SEEDS = 3


def _runs(cell: Cell) -> set[tuple[str, str, str]]:
    return {(cell.host, term.arm, term.label) for term in cell.terms}


def planned_seeds(study: str, cell: Cell) -> int:
    """The seed count at which `cell` is decided at `study`, in every claim that reads it (a planned
    contrast's runs are not looked at early through another cell either)."""
    for contrast in SEQUENTIAL_PLAN:
        if contrast.study != study:
            continue
        planned_cell = next(
            c
            for c in CLAIMS_BY_KEY[contrast.claim].family
            if (c.host, c.name, c.endpoint) == (contrast.host, contrast.cell, contrast.endpoint)
        )
        if _runs(cell) <= _runs(planned_cell):
            return len(contrast.seeds)
    return CELL_SEEDS


# The capacity sweep's supervised control (16 vs 64 tokens at nuisance 0.5, 3 seeds, cpu600 where the
# sweep ran, so its runs pair with the existing ones): the claim `capacity_bottleneck`.
CAPACITY_CONTROL_POINTS = (capacity_label(_FEW, 0.5), capacity_label(_MANY, 0.5))
