"""The InfoTok study: protocol (runs and sweeps), subprocess runner, aggregation and figures.

`experiments/run_study.py` is the command line; see docs/study.md.
"""

from infotok_jax.study.protocol import ARMS, HOSTS, SWEEPS, Run, Sweep, plan

__all__ = ["ARMS", "HOSTS", "SWEEPS", "Run", "Sweep", "plan"]
