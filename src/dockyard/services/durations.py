"""Human durations (`90s`, `15m`, `12h`, `30d`, `2w`) as used on the CLI and in image labels."""

from __future__ import annotations

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
