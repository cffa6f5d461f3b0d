"""Text from devices and clients made safe for one log line: control characters escaped, length capped.

A camera's name, serial or an alert's labels come from outside: written raw, a newline would forge a log
line, an ANSI escape would reach the terminal of whoever reads the log, and a 10 MB name would add 10 MB
of log per push.
"""

from __future__ import annotations

import re

DEFAULT_LIMIT = 120
# C0/C1 controls, DEL, Unicode line and paragraph separators, zero-width and bidirectional controls.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def loggable(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as text for a log line: at most ``limit`` characters, nothing that acts on a terminal."""
    text = value if isinstance(value, str) else str(value)
    cut = ""
    if len(text) > limit:
        cut = f"...[{len(text) - limit} more characters]"
        text = text[:limit]
    return _UNSAFE.sub(_escape, text) + cut
