"""Training binary: `python -m infotok_jax.train --config=experiments/configs/<name>.py:<args> --workdir=DIR`.

All logic lives in `infotok_jax.training` (importable and tested); this file only parses flags, starts
multi-process JAX when asked (`binary_setup`), builds the task named by the config and hands both to the
loop. DIR may be a local path or gs://bucket/path.
"""

from __future__ import annotations

import sys
import time

_STARTED_AT = time.time()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from infotok_jax import binary_setup  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (local or gs://) for checkpoints, metrics, images."
)
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Lower and compile the train step for the configured mesh, print memory, exit."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    binary_setup.start()
    from infotok_jax import storage, tasks
    from infotok_jax.training import checkpointing, config_checks, trainer

    try:
        task = tasks.build_task(_CONFIG.value)
        trainer.train_and_evaluate(
            _CONFIG.value, task, _WORKDIR.value, compile_only=_COMPILE_ONLY.value, started_at=_STARTED_AT
        )
    except (
        config_checks.ConfigError,
        checkpointing.IncompatibleWorkdirError,
        trainer.NonFiniteLossError,
    ) as e:
        _exit_with_error(str(e))
    except Exception as e:  # orbax and tensorstore re-raise ENOSPC under other types
        if not storage.is_disk_full(e):
            raise
        _exit_with_error(
            f"no space left on the device of --workdir {_WORKDIR.value} (ENOSPC); the checkpoints saved "
            "before are intact: free space (or move the workdir to a larger disk) and run the same command "
            "again, it resumes from the last checkpoint"
        )


def _exit_with_error(message: str) -> None:
    """A user error: one line on stderr, exit code 2."""
    logging.error("%s", message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
    """Console-script entry point (`infotok-train`)."""
    from infotok_jax import console

    console.run(main, __name__)


if __name__ == "__main__":
    run()
