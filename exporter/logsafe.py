"""Text from devices and clients made safe for one log line: control characters escaped, length capped.

A camera's name, serial or an alert's labels come from outside: written raw, a newline would forge a log
line, an ANSI escape would reach the terminal of whoever reads the log, and a 10 MB name would add 10 MB
of log per push.
"""

from __future__ import annotations

import html
import json
import re

DEFAULT_LIMIT = 120
# C0/C1 controls, DEL, Unicode line and paragraph separators, zero-width and bidirectional controls.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_MARKUP = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_ERROR_TEXT = re.compile(r'"(?:message|error)"\s*:\s*"((?:[^"\\]|\\.)*)"')


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


def error_body_text(body: str, status: object, reason: object) -> str:
    """What an InfluxDB error ``body`` says went wrong, in one line (v1 says "error", v2 "message")."""
    match = _ERROR_TEXT.search(body)
    if match:
        try:
            text = str(json.loads(f'"{match.group(1)}"'))
        except ValueError:
            text = match.group(1)
    elif _MARKUP.search(body):
        # A proxy in front of InfluxDB (nginx's 502 when InfluxDB is down) answers a whole HTML page: its
        # title says what happened; the markup, the repeated heading and the server's signature do not.
        title = _TITLE.search(body)
        text = html.unescape(_MARKUP.sub(" ", title.group(1) if title else body)).strip()
        text = text.removeprefix(f"{status} ").strip() or str(reason or "")
        text += " (an HTML page from a proxy in front of InfluxDB)"
    else:
        text = body or str(reason or "")
    return " ".join(text.split())
