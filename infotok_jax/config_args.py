"""Parsing of the `:args` suffix of `--config=path.py:args` (big_vision style, no eval).

`"dataset=scenes,arm=hsic,tiny"` -> {"dataset": "scenes", "arm": "hsic", "tiny": True}.
"""

from __future__ import annotations

import math


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
        elif isinstance(default, int | float):
            values[key] = _number(key, raw, type(default))
        else:
            values[key] = raw
    return values


def _number(key: str, raw: str, kind: type) -> int | float:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(
            f"config argument {key}={raw!r} is not {'an int' if kind is int else 'a number'}; "
            f"give e.g. {key}={kind(8)}"
        ) from None


def tokens_per_side(tokens: int, image_size: int) -> int:
    """The side of the square grid of `tokens` image tokens; ValueError listing the counts that fit.

    A count that is not a square, or whose side does not divide `image_size`, cannot be honoured exactly.
    """
    side = math.isqrt(tokens) if tokens > 0 else 0
    if side < 1 or side * side != tokens or image_size % side:
        valid = [s * s for s in range(1, image_size + 1) if image_size % s == 0]
        raise ValueError(
            f"config argument tokens={tokens} cannot be honoured: the tokens form a square grid whose side "
            f"divides the image size {image_size}; choose one of {valid}"
        )
    return side
