"""`infotok_jax/configs/tokenizer.py` under its checkout path; `--config=tokenizer.py` names it too."""

from infotok_jax.configs.tokenizer import ARGS, get_config

__all__ = ["ARGS", "get_config"]
