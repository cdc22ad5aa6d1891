"""The --sweep_shard value: which share of a sweep's points this process runs."""

from __future__ import annotations

import re

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n; None or '' -> (0, 1), the whole sweep. Anything else is a ValueError."""
    if not text:
        return 0, 1
    m = _SHARD.fullmatch(text)
    if not m:
        raise ValueError(
            f"--sweep_shard={text}: must be i/n, two whole numbers with 0 <= i < n (e.g. 2/8: shard 2 of 8)."
        )
    i, n = int(m.group(1)), int(m.group(2))
    if not 0 <= i < n:
        raise ValueError(
            f"--sweep_shard={text}: shard i of n needs 0 <= i < n (shards are numbered from 0, so 0/{max(n, 1)} "
            f"to {max(n, 1) - 1}/{max(n, 1)})."
        )
    return i, n
