"""Helpers shared by config files: parsing the `file.py:key=value,...` argument."""

from __future__ import annotations

from typing import Any


def convert_value(text: str) -> Any:
    """A command-line value as bool, None, int, float or (otherwise) the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_arg(arg: str | None, *, lone_key: str | None = None, **defaults: Any) -> dict[str, Any]:
    """Parses a config argument such as ``phi=4,alpha=1.2`` into a dict over `defaults`.

    A lone value without '=' (``b3``) is stored under `lone_key`. Unknown keys are
    an error naming the allowed ones, so a typo never passes silently.
    """
    out = dict(defaults)
    if not arg:
        return out
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            key, value = item.split("=", 1)
        elif lone_key is not None:
            key, value = lone_key, item
        else:
            raise ValueError(f"Config argument {item!r} must be key=value; allowed keys: {', '.join(defaults)}.")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"Unknown config argument {key!r}; allowed keys: {', '.join(defaults)}.")
        out[key] = convert_value(value.strip())
    return out
