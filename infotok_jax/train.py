"""Training binary: `python -m infotok_jax.train --config=experiments/configs/<name>.py:<args> --workdir=DIR`.

All logic lives in `infotok_jax.training` (importable and tested); this file only parses flags, starts
multi-host JAX when asked, and hands over.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Lower and compile the train step for the configured mesh, print memory, exit."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (TPU pods, SLURM, local multi-process)."
)
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax_info_logs() -> None:
    """Orbax logs every file operation at INFO through absl; keep its warnings, drop the rest."""

    import logging as std_logging

    def keep(record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

    for handler in [*std_logging.getLogger().handlers, logging.get_absl_handler().python_handler]:
        handler.addFilter(keep)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from infotok_jax import distributed

    _quiet_orbax_info_logs()
    distributed.initialize(_DISTRIBUTED.value)
    import jax

    from infotok_jax import compilation_cache
    from infotok_jax.training import checkpointing, config_checks, trainer

    compilation_cache.enable()
    logging.info(
        "JAX process %d/%d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    try:
        trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, compile_only=_COMPILE_ONLY.value)
    except (config_checks.ConfigError, checkpointing.IncompatibleWorkdirError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console-script entry point (`infotok-train`)."""
    app.run(main)


if __name__ == "__main__":
    run()
