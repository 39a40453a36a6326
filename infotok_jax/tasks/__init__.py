"""Model families the training binary can train, selected by `config.task`.

`config.task` is a registered name ("host", "tokenizer") or the import path of any class implementing
`infotok_jax.training.task.Task`, as "package.module:ClassName" (the test suite's toy task is one), so a
new model family plugs in without editing this package.
"""

from __future__ import annotations

import importlib

import ml_collections

from infotok_jax.training.config_checks import ConfigError

_REGISTERED = {
    "host": "infotok_jax.tasks.host_task:HostTask",
    "tokenizer": "infotok_jax.tasks.tokenizer_task:TokenizerTask",
}


def build_task(config: ml_collections.ConfigDict):
    """Instantiates the task named by `config.task`; raises ConfigError for names that do not resolve."""
    name = config.get("task")
    path = _REGISTERED.get(name, name)
    module_name, _, class_name = (path or "").partition(":")
    if not class_name:
        raise ConfigError(
            f"config.task: unknown task {name!r}; choose one of {sorted(_REGISTERED)} or give a class as "
            "'package.module:ClassName'"
        )
    try:
        task_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config.task={name!r} does not resolve to a class ({e})") from None
    return task_class(config)
