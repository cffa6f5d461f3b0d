"""Slices of a large push body, parsed one at a time: what keeps a 90-day backfill's memory bounded.

orjson on a whole 35 MB push makes about 250 MB of Python objects. ``MeasurementSplitter`` walks the
JSON outside the measurement arrays with a small tokenizer and hands out the arrays' elements in slices
of about ``piece_bytes``, each parsed by orjson on its own; anything outside the usual shape raises
``Unsplittable`` and the caller parses the body whole instead. A leaf: it knows JSON, not pushes.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import Any

import orjson


class Unsplittable(Exception):
    """The body does not have the usual shape; parse it whole with ``parse_push`` instead."""


# Tokens of the JSON outside the measurement arrays (a few hundred bytes in a real push).
# Possessive: a backtracking repeat of an alternation keeps a frame per character, gigabytes for a
# 67 MB string.
_TOKEN = re.compile(rb'[ \t\r\n]*+(?:("(?:[^"\\\x00-\x1f]++|\\.)*+")|([{}\[\]:,])|([^ \t\r\n{}\[\]:,"]++))')
# Where a measurement of the usual shape ends (its ``items`` array or null closes it), and what follows.
_MEASUREMENT_END = re.compile(rb"(?:\]|null)[ \t\r\n]*\}[ \t\r\n]*([,\]])")
_ARRAY_END = re.compile(rb"(?:\]|null)[ \t\r\n]*\}[ \t\r\n]*\]")
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_MAX_ENVELOPE_BYTES = 1 << 20
_MAX_ATTEMPTS = 4


class MeasurementSplitter:
    """Parses a large push piece by piece: measurement arrays in slices of about ``piece_bytes``.

    Only the slices' objects are alive at a time (orjson on a whole 35 MB push makes 250 MB of them).
    A slice is cut where the usual measurement shape ends and is accepted only if orjson parses it as
    an array: a slice that starts at an element boundary parses only if it also ends at one, so the
    elements are exactly those of a whole parse. Anything unexpected raises Unsplittable.

    ``pieces`` finds and checks the slices (and the envelope: everything but the measurement arrays);
    ``replay`` parses the same slices again, which then cannot fail.
    """

    def __init__(self, body: bytes | bytearray, piece_bytes: int = 1 << 17) -> None:
        self._body = body
        self._piece_bytes = piece_bytes
        self._envelope: list[bytes] = []
        self._slices: list[tuple[int, int]] = []

    def pieces(self) -> Iterator[list[Any]]:
        """The measurements of ``data`` (object or array form), in order, as lists of raw objects."""
        body = self._body
        size = len(body)
        # Stack of open containers: [is_object, current key, keys seen]; path checks use the keys.
        stack: list[list[Any]] = []
        expect_key = False
        segment_start = 0
        kept = 0  # bytes of the envelope already appended
        pos = 0
        done = False
        while True:
            match = _TOKEN.match(body, pos)
            if match is None or match.end() == pos:
                if done and _WHITESPACE.match(body, pos).end() == size:  # type: ignore[union-attr]
                    break
                raise Unsplittable(f"unexpected text at byte {pos}")
            if done:
                raise Unsplittable("text after the push")
            pos = match.end()
            string, punct, _literal = match.groups()
            top = stack[-1] if stack else None
            if string is not None:
                if top is not None and top[0] and expect_key:
                    key = orjson.loads(string)
                    if key in top[2]:
                        raise Unsplittable(f"key {key!r} appears twice")
                    top[1] = key
                    top[2].add(key)
                    expect_key = False
                elif top is None:
                    done = True
            elif punct is None:
                if top is None:
                    done = True
            elif punct == b"{" or (punct == b"[" and not self._is_measurements(stack)):
                if len(stack) >= 64:
                    raise Unsplittable("nested too deeply")
                stack.append([punct == b"{", None, set()])
                expect_key = punct == b"{"
            elif punct == b"[":
                self._envelope.append(bytes(body[segment_start:pos]))
                kept += pos - segment_start + 1
                end = yield from self._array(pos)
                self._envelope.append(b"]")
                segment_start = pos = end + 1
            elif punct in (b"}", b"]"):
                if not stack or stack[-1][0] != (punct == b"}"):
                    raise Unsplittable("unbalanced brackets")
                stack.pop()
                expect_key = False
                done = not stack
            elif punct == b",":
                expect_key = top is not None and top[0]
            if kept + pos - segment_start > _MAX_ENVELOPE_BYTES:
                raise Unsplittable("large values outside the measurement arrays")
        self._envelope.append(bytes(body[segment_start:]))

    @staticmethod
    def _is_measurements(stack: list[list[Any]]) -> bool:
        """Whether a ``[`` here opens data.measurements or data[i].measurements."""
        if not stack or not stack[-1][0] or stack[-1][1] != "measurements" or not stack[0][0]:
            return False
        if stack[0][1] != "data":
            return False
        if len(stack) == 2:
            return True
        return len(stack) == 3 and not stack[1][0]

    def _array(self, pos: int) -> Generator[list[Any], None, int]:
        """Yield the elements of the array whose content starts at ``pos``; return its ``]`` index."""
        body = self._body
        pos = _WHITESPACE.match(body, pos).end()  # type: ignore[union-attr]
        if body[pos : pos + 1] == b"]":
            return pos
        while True:
            piece, end, closed = self._next_piece(pos)
            yield piece
            if closed:
                return end
            pos = end + 1

    def _next_piece(self, pos: int) -> tuple[list[Any], int, bool]:
        """Parse elements from ``pos`` to a verified boundary: (elements, separator index, array closed)."""
        body = self._body
        target = pos + self._piece_bytes
        attempts = 0
        match = _MEASUREMENT_END.search(body, target) if target < len(body) else None
        while match is not None and attempts < _MAX_ATTEMPTS:
            attempts += 1
            separator = match.end() - 1
            parsed = self._try(pos, separator)
            if parsed is not None:
                self._slices.append((pos, separator))
                return parsed, separator, match.group(1) == b"]"
            match = _MEASUREMENT_END.search(body, match.end())
        # The array ends before ``target``, or the slice found no boundary: look for the array's end.
        match = _ARRAY_END.search(body, pos)
        while match is not None and attempts < 2 * _MAX_ATTEMPTS:
            attempts += 1
            separator = match.end() - 1
            parsed = self._try(pos, separator)
            if parsed is not None:
                self._slices.append((pos, separator))
                return parsed, separator, True
            match = _ARRAY_END.search(body, match.end())
        raise Unsplittable(f"no element boundary found after byte {pos}")

    def _try(self, start: int, separator: int) -> list[Any] | None:
        try:
            parsed = orjson.loads(b"[" + bytes(self._body[start:separator]) + b"]")
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) else None

    def replay(self) -> Iterator[list[Any]]:
        """The slices ``pieces`` checked, parsed again in the same order."""
        body = self._body
        for start, separator in self._slices:
            parsed: list[Any] = orjson.loads(b"[" + bytes(body[start:separator]) + b"]")
            yield parsed

    def envelope(self) -> bytes:
        """The push with every streamed measurement array emptied (valid once ``pieces`` is exhausted)."""
        return b"".join(self._envelope)
