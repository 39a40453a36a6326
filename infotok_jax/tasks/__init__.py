"""Model families the training binary can train, selected by `config.task`."""

from __future__ import annotations

import ml_collections

from infotok_jax.training.config_checks import ConfigError


def build_task(config: ml_collections.ConfigDict):
    """Instantiates the task named by `config.task`; raises ConfigError for unknown names."""
    name = config.get("task")
    if name == "toy_regression":
        from infotok_jax.tasks.toy_regression import ToyRegressionTask

        return ToyRegressionTask(config)
    if name == "tokenizer":
        from infotok_jax.tasks.tokenizer_task import TokenizerTask

        return TokenizerTask(config)
    if name == "host":
        from infotok_jax.tasks.host_task import HostTask

        return HostTask(config)
    raise ConfigError(
        f"config.task: unknown task {name!r}; choose one of 'host', 'tokenizer', 'toy_regression'"
    )
