"""Budgets and the priority order of the study's slices: what runs, under which budget, in which order.

A budget is what every run of one study gets (steps, batch, evaluation cadence); a slice is one sweep of
`protocol.SWEEPS` on some hosts over seeds, optionally restricted to some of its variants. `run_study.py`
runs the slices in the order of `SLICES`, so the comparisons the claims rest on are measured first.
"""

from __future__ import annotations

import dataclasses

from infotok_jax.study import claim_families, protocol


@dataclasses.dataclass(frozen=True)
class Budget:
    """A study's training budget: config arguments every run gets. Results of different budgets are
    kept apart (one results folder per study name)."""

    steps: int
    extra: str
    description: str
    overrides: tuple[str, ...] = ()  # `--config.<field>=<value>` flags every run of the budget gets


BUDGETS: dict[str, Budget] = {
    # eval_every=steps: the in-training evaluation runs once, at the end (its scores are the ones kept).
    "cpu600": Budget(600, "batch=32,eval_every=600", "CPU scale: 600 steps at batch 32"),
    "cpu1200": Budget(1200, "batch=32,eval_every=1200", "CPU scale: 1200 steps at batch 32"),
    "cpu2400": Budget(2400, "batch=32,eval_every=2400", "CPU scale: 2400 steps at batch 32"),
    # B scored on the whole 2000-example test split (80 x 25; 80 splits over 1-16 batch shards) and also at
    # the shifted nuisance: the study of the sequential plan (claim_families.SEQUENTIAL_PLAN), because
    # evaluation sampling is a material part of the paired variance at 512 examples (docs/study.md)
    "cpu2400full": Budget(
        2400,
        "batch=32,eval_every=2400",
        "CPU scale: 2400 steps at batch 32, scored on the whole test split and at the shifted nuisance",
        (
            "--config.evaluation.batch_size=80",
            "--config.evaluation.max_batches=25",
            f"--config.evaluation.shift_nuisance={claim_families.SHIFT_NUISANCE:g}",
        ),
    ),
    "tiny": Budget(2, "tiny", "smoke test: tiny models, 2 steps"),
}


@dataclasses.dataclass(frozen=True)
class Slice:
    """A unit of work in priority order: one sweep on some hosts over seeds (`labels`: only the sweep's
    variants with these labels; empty keeps them all; `first`: the variants whose runs, every seed, come
    before the others')."""

    name: str
    sweep: str
    hosts: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    labels: tuple[str, ...] = ()
    first: tuple[str, ...] = ()
    arms: tuple[str, ...] = protocol.ARMS
    study: str = ""  # the budget the slice is planned for ("" = any); `--status` shows it


HEADLINE_LABELS = ("baseline", "supervised: probe + contrastive", "hsic: full", "vib: full")
LM_GRADIENT_LABELS = ("baseline", "baseline, LM gradient flipped", "hsic: full", "hsic: LM gradient flipped")
# The points of the capacity claim's two main contrasts (study/capacity.py): the nuisance at the fewer
# tokens, and fewer vs more tokens at the middle nuisance. The nuisance contrast at the larger token count
# replicates the first with the costliest runs, so it comes last.
_FEW_TOKENS, _MANY_TOKENS = min(protocol.CAPACITY_TOKENS), max(protocol.CAPACITY_TOKENS)
CAPACITY_FIRST = (
    *(protocol.capacity_label(_FEW_TOKENS, n) for n in protocol.CAPACITY_NUISANCE),
    protocol.capacity_label(_MANY_TOKENS, protocol.CAPACITY_NUISANCE[1]),
)


def _planned(contrast: claim_families.PlannedContrast) -> Slice:
    """The slice of one contrast of the sequential plan: its two arms' main runs on its host, every seed."""
    cell = next(
        c
        for c in claim_families.CLAIMS_BY_KEY[contrast.claim].family
        if (c.host, c.name, c.endpoint) == (contrast.host, contrast.cell, contrast.endpoint)
    )
    arms = tuple(dict.fromkeys(t.arm for t in cell.terms))
    return Slice(
        f"plan_{contrast.host}_{'_'.join(arms)}",
        "controls",
        (contrast.host,),
        seeds=contrast.seeds,
        labels=tuple(claim_families.HEADLINE[a] for a in arms),
        arms=arms,
        study=contrast.study,
    )


# The order: AR controls and ablations over 3 seeds (the comparisons the claims rest on first, so
# their paired intervals come early); the masked and continuous hosts' LM-gradient settings, chosen on
# validation as on AR (the baseline's, and the HSIC arm's, which sets the host default the other arms run
# with) before those hosts enter any table or the budget curve; the same controls on continuous and
# masked (their headline rows first: with the AR ones they are the main table, baseline vs the IB arms vs
# the supervised control on all three hosts); then the capacity sweep, then the main sweep. At a budget
# other than the one the controls ran at, the headline slices are the main table of that budget
# (docs/study.md).
SLICES: tuple[Slice, ...] = (
    Slice("ar_headline", "controls", ("ar",), labels=HEADLINE_LABELS),
    Slice("ar_controls", "controls", ("ar",)),
    Slice("lm_gradient", "controls", ("masked", "continuous"), labels=LM_GRADIENT_LABELS),
    Slice("continuous_headline", "controls", ("continuous",), labels=HEADLINE_LABELS),
    Slice("masked_headline", "controls", ("masked",), labels=HEADLINE_LABELS),
    Slice("continuous_controls", "controls", ("continuous",)),
    Slice("masked_controls", "controls", ("masked",)),
    Slice("ar_capacity", "capacity", ("ar",), first=CAPACITY_FIRST),
    Slice("continuous_capacity", "capacity", ("continuous",), first=CAPACITY_FIRST),
    Slice("masked_capacity", "capacity", ("masked",), first=CAPACITY_FIRST),
    Slice("main", "main", protocol.HOSTS),
    # the three headline slices as one table: the main table at a budget (its runs are all theirs)
    Slice("main_table", "controls", protocol.HOSTS, labels=HEADLINE_LABELS),
    *(_planned(c) for c in claim_families.SEQUENTIAL_PLAN),
    # the capacity sweep's supervised control (claim `capacity_bottleneck`), at the sweep's own budget
    Slice(
        "ar_capacity_supervised",
        "capacity",
        ("ar",),
        labels=claim_families.CAPACITY_CONTROL_POINTS,
        arms=("supervised",),
        study="cpu600",
    ),
)


def plan_slice(slice_: Slice, budget: Budget) -> list[protocol.Run]:
    """The runs of one slice under `budget`: those of its `first` variants, then the others, each part
    seed-major (every variant of seed 0 first, so a slice cut short still holds complete paired sets of
    seeds)."""
    runs = protocol.plan(
        slice_.sweep, slice_.hosts, slice_.arms, slice_.seeds, budget.steps, budget.extra, budget.overrides
    )
    if slice_.labels:
        runs = [r for r in runs if r.value in slice_.labels]
    return sorted(runs, key=lambda r: (r.value not in slice_.first, slice_.seeds.index(r.seed)))


def slice_by_name(name: str) -> Slice:
    for s in SLICES:
        if s.name == name:
            return s
    raise ValueError(f"--slice={name!r} is unknown; choose one of {', '.join(s.name for s in SLICES)}")
