"""Produce ahead: the next item of an iterator is made in an operating-system thread while the caller
uses the current one.

The receiver converts a large push chunk by chunk while InfluxDB stores the chunk before (InfluxDB is
another process, on another core). Conversion is Python holding the GIL; waiting for InfluxDB's answer
releases it, so the two overlap in real threads. Under gevent's workers a patched ``threading.Thread``
is a greenlet, which converts only where the writer yields: the helper then runs in the hub's pool of
real threads instead, and the caller waits for it cooperatively.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
_END = object()
_executor: ThreadPoolExecutor | None = None


class _Result(Protocol):
    def get(self) -> Any: ...


class _FutureResult:
    """A concurrent.futures Future with gevent's AsyncResult interface."""

    def __init__(self, future: Future[Any]) -> None:
        self._future = future

    def get(self) -> Any:
        return self._future.result()


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _in_thread(function: Callable[[], Any]) -> _Result:
    """Run ``function`` in a real thread; the result is waited for without blocking other greenlets."""
    if _gevent_patched():
        from gevent import get_hub

        result: _Result = get_hub().threadpool.spawn(function)
        return result
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="axis-exporter-ahead")
    return _FutureResult(_executor.submit(function))


class Ahead(Iterator[T], Generic[T, R]):
    """Iterates ``items``, always making the next one in a helper thread while the caller has this one.

    ``returned`` is what the generator ``items`` returned once it ended (a conversion's summary), None
    before. ``close`` waits for the item in the making (a thread cannot be interrupted) and stops there.
    """

    def __init__(self, items: Generator[T, None, R]) -> None:
        self._items = items
        self.returned: R | None = None
        self._pending: _Result | None = _in_thread(self._next)

    def _next(self) -> object:
        try:
            return next(self._items)
        except StopIteration as end:
            self.returned = end.value
            return _END

    def __next__(self) -> T:
        if self._pending is None:
            raise StopIteration
        item = self._pending.get()  # re-raises what making the item raised
        if item is _END:
            self._pending = None
            raise StopIteration
        self._pending = _in_thread(self._next)
        return item  # type: ignore[no-any-return]  # an item of items, not the end marker

    def close(self) -> None:
        """Let the item in the making finish, and make no more."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.get()
            except Exception as exc:
                # Closed early because the caller failed; that failure is the one being reported.
                log.debug("an item made ahead failed after its consumer stopped: %r", exc)
