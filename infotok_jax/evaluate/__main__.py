"""Evaluation binary: `python -m infotok_jax.evaluate --config=experiments/configs/host.py:... --workdir=DIR`.

Scores the latest checkpoint of a host run (understanding accuracy per question type, oracle-scored
generation per attribute, reconstruction PSNR, each beside its floors and references) on
`config.evaluation.splits`, prints the Markdown table and writes it with the JSON and the PNG grids to
`DIR/eval/step_<N>/`, and appends the scores to `DIR/eval/metrics.jsonl` and to TensorBoard events in
`DIR/eval/tensorboard/`. Runs as one process or, with --distributed, as every process of a multi-process job
(each computes the same scores; process 0 writes). DIR may be local or gs://.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from infotok_jax import binary_setup

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (local or gs://) holding checkpoints/.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None, "Batches per split and evaluator (default: config).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    binary_setup.start()
    from infotok_jax import tasks
    from infotok_jax.evaluate import checkpoint_eval
    from infotok_jax.training import config_checks

    try:
        for directory in (_WORKDIR.value, epath.Path(_WORKDIR.value) / "eval"):  # before minutes of work
            config_checks.check_existing_dir_writable(directory, "--workdir", "the report is written there")
        task = tasks.build_task(_CONFIG.value)
        outcome = checkpoint_eval.evaluate_checkpoint(_CONFIG.value, task, _WORKDIR.value, _MAX_BATCHES.value)
    except (config_checks.ConfigError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if "markdown" in outcome["paths"]:
        print(epath.Path(outcome["paths"]["markdown"]).read_text())
    for name, path in sorted(outcome["paths"].items()):
        print(f"{name}: {path}")


def run() -> None:
    """Console-script entry point (`infotok-evaluate`)."""
    from infotok_jax import console

    console.run(main, __name__)


if __name__ == "__main__":
    run()
