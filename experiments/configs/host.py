"""`infotok_jax/configs/host.py` under its checkout path; `--config=host.py` names it too."""

from infotok_jax.configs.host import ARGS, get_config

__all__ = ["ARGS", "get_config"]
