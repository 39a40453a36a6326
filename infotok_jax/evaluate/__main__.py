"""Evaluation binary: `python -m infotok_jax.evaluate --config=experiments/configs/host.py:... --workdir=DIR`.

Scores the latest checkpoint of a host run (understanding accuracy per question type, oracle-scored
generation per attribute with chance levels, reconstruction PSNR) on `config.evaluation.splits`, prints
the Markdown table and writes it with the JSON and the PNG grids to `DIR/eval/step_<N>/`.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None, "Batches per split and evaluator (default: config).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from infotok_jax import compilation_cache
    from infotok_jax.evaluate import checkpoint_eval

    compilation_cache.enable()
    outcome = checkpoint_eval.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _MAX_BATCHES.value)
    print(open(outcome["paths"]["markdown"]).read())
    for name, path in sorted(outcome["paths"].items()):
        print(f"{name}: {path}")


if __name__ == "__main__":
    app.run(main)
