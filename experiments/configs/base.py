"""`infotok_jax/configs/base.py` under its checkout path; `--config=base.py` names it too."""

from infotok_jax.configs.base import ARGS, get_config

__all__ = ["ARGS", "get_config"]
