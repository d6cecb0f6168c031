"""Time as integer milliseconds since the epoch, the unit of every timestamp column."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
