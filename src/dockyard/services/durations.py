"""Human durations (`90s`, `15m`, `12h`, `30d`, `2w`) as used on the CLI and in image labels, and
points in time given as ISO 8601 or as a duration ago."""

from __future__ import annotations

import datetime as dt
import re

from dockyard.domain.errors import InvalidRequest

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """Seconds in `text`; InvalidRequest when it is not a positive duration."""
    match = _DURATION.match(text.strip())
    if match is None or int(match[1]) == 0:
        raise InvalidRequest(f"invalid duration {text!r} (use e.g. 12h, 30d, 2w)")
    return int(match[1]) * _UNITS[match[2]]


def parse_instant(text: str, now_ms: int) -> int:
    """A point in time as ms since the epoch: an ISO 8601 date or time (UTC unless it names an
    offset), or a duration (`2h`, `30d`) meaning that long before `now_ms`."""
    value = text.strip()
    if _DURATION.match(value):
        return now_ms - parse_duration(value) * 1000
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"invalid time {text!r} (use an ISO time such as 2026-11-26T10:00Z, or 2h, 30d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)
