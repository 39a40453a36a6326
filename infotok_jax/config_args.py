"""Parsing of the `:args` suffix of `--config=path.py:args` (big_vision style, no eval).

`"dataset=scenes,arm=hsic,tiny"` -> {"dataset": "scenes", "arm": "hsic", "tiny": True}.
"""

from __future__ import annotations


def parse(arg: str | None, allowed: dict[str, object]) -> dict[str, object]:
    """Parses comma-separated `key=value` / `flag` items against `allowed` (name -> default).

    Values are converted to the type of the default (bool flags may be given bare). Unknown keys raise
    ValueError listing the allowed ones.
    """
    values = dict(allowed)
    if not arg:
        return values
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        key, has_value, raw = item.partition("=")
        if key not in allowed:
            raise ValueError(f"unknown config argument {key!r}; allowed: {', '.join(sorted(allowed))}")
        default = allowed[key]
        if isinstance(default, bool):
            values[key] = raw.lower() in ("1", "true", "yes") if has_value else True
        elif not has_value:
            raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
        elif isinstance(default, int):
            values[key] = int(raw)
        elif isinstance(default, float):
            values[key] = float(raw)
        else:
            values[key] = raw
    return values
