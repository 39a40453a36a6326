"""The experiment configs, shipped in the package so the binaries work from a pip install.

`--config` takes a file path (`experiments/configs/host.py`, thin files that re-export these) or the bare
name of a packaged config (`host.py`, `tokenizer.py`, `base.py`), with the usual `:args` suffix:

    infotok-train --config=host.py:host=ar,tiny --workdir=/tmp/run

A path that exists as a file always wins; a bare name that does not is looked up here.
"""

from __future__ import annotations

import os
import sys

from etils import epath

PACKAGED = ("base.py", "host.py", "tokenizer.py")


def packaged_path(name: str) -> epath.Path:
    """The installed file of the packaged config `name` (e.g. "host.py")."""
    return epath.resource_path("infotok_jax.configs") / name


def resolve(value: str) -> str:
    """`--config` value -> the same value with a bare packaged name replaced by its installed path.

    Raises ValueError when the file part is neither an existing file nor a packaged config.
    """
    path, sep, args = value.partition(":")
    if os.path.exists(path) or "://" in path:
        return value
    if os.path.basename(path) == path and path in PACKAGED:
        return f"{packaged_path(path)}{sep}{args}"
    raise ValueError(
        f"--config={value}: no such file {path!r}; give a config file's path or a packaged config's name: "
        f"{', '.join(PACKAGED)} (e.g. --config=host.py:tiny)"
    )


def resolve_argv(argv: list[str]) -> list[str]:
    """argv with its `--config=VALUE` / `--config VALUE` resolved (`--config.<field>=` untouched).

    An unresolvable value is a user error: one line on stderr naming the fix, exit status 2.
    """
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            index, value = i, arg[len("--config=") :]
        elif arg == "--config" and i + 1 < len(out):
            index, value = i + 1, out[i + 1]
        else:
            continue
        try:
            resolved = resolve(value)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        out[index] = f"--config={resolved}" if index == i else resolved
    return out
