"""Flag and config-file errors of the binaries as one line naming the fix, instead of a traceback.

absl parses `--config=path.py:args` and the `--config.<field>=value` overrides before `main` runs: a
typo in a field name, an argument the config file refuses (`host=foo`, `tokens=15`, `batch=eight`),
a missing config file or a syntax error in it surfaced as a nested traceback ("FATAL Flags parsing
error", or a raw AttributeError) with exit code 1. `parse_flags` is the `flags_parser` for `app.run`: it
prints `error: <flag>: <what is wrong>` and exits with code 2, like every other user error. An unknown
field name gets the closest existing one (difflib).
"""

from __future__ import annotations

import difflib
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

USAGE_ERROR_EXIT_CODE = 2


def config_field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every field of `config` (blocks and leaves)."""
    names = []
    for key, value in config.items():
        names.append(f"{prefix}{key}")
        if isinstance(value, ml_collections.ConfigDict):
            names.extend(config_field_names(value, f"{prefix}{key}."))
    return names


def unknown_field_message(name: str, config: ml_collections.ConfigDict) -> str | None:
    """For an override of a field the config lacks: what to write instead; None for a known field."""
    known = config_field_names(config)
    if name in known:
        return None
    closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean --config.{closest[0]}?" if closest else "; see the config file for its fields"
    return f"--config.{name}: the config has no field {name!r}{hint}"


def _root_cause(error: BaseException) -> BaseException:
    """The first error of the chain (`raise ... from None` ends it)."""
    while True:
        earlier = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if earlier is None:
            return error
        error = earlier


def _config_flag(argv: list[str]) -> str:
    return next((a for a in argv if a.startswith("--config=")), "--config")


def _config_without_overrides(argv: list[str]) -> ml_collections.ConfigDict | None:
    """The config file's config as `--config=` alone builds it; None when that fails too."""
    values = flags.FlagValues()
    only_config = [argv[0], _config_flag(argv)]
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=values, sys_argv=only_config)
    try:
        values(only_config)
        return values.config
    except Exception:  # the config file itself is what failed
        return None


def describe(error: BaseException, argv: list[str], config: object) -> str:
    """The one-line message for an error raised while parsing `argv` (`config`: the loaded config, if
    the config file itself loaded)."""
    if isinstance(config, ml_collections.ConfigDict):
        for arg in argv:
            if arg.startswith("--config."):
                message = unknown_field_message(arg[len("--config.") :].split("=", 1)[0], config)
                if message:
                    return message
    root = _root_cause(error)
    if isinstance(root, SyntaxError):
        return f"{_config_flag(argv)}: syntax error in {root.filename} line {root.lineno}: {root.msg}"
    if isinstance(root, FileNotFoundError) or "No such file" in str(root):
        return (
            f"{_config_flag(argv)}: no such config file; check the path (relative to the current directory)"
        )
    if isinstance(error, flags.Error) and root is error:
        return str(error).splitlines()[0]
    return f"{_config_flag(argv)}: {str(root).splitlines()[0] if str(root) else type(root).__name__}"


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run`'s flags_parser: absl's parse, with any error printed as one line and exit code 2."""
    try:
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            _ = flags.FLAGS["config"].value.keys()  # a config file that failed to load raises only here
        return remaining
    except Exception as e:  # config files raise anything their code can
        print(f"error: {describe(e, argv, _config_without_overrides(argv))}", file=sys.stderr)
        sys.exit(USAGE_ERROR_EXIT_CODE)
