"""The sensors file: a YAML mapping of serials to site, zone and a few further labels, reloaded live.

```yaml
sensors:
  ACCC8EF3D92E:
    site: Store 12 Berlin
    zone: Main entrance
    floor: "1"
```

The file is an operator's, but its values become tags and metric labels, so they keep to the rules for
device strings: at most 64 characters, printable, and only the label keys in ``LABEL_KEYS``. Every error
names the file, the line and the rule (``SensorsFileError``), and ``serve`` does not start with one.

Every process (the gunicorn master, each worker, the admin process) holds its own ``SensorsFile``. It
looks at the file at most once per ``check_seconds`` and reloads when the file or the reload marker
changed: a SIGHUP to ``serve`` makes the master validate the file and replace the marker, and every
other process follows within a second. A reload that fails keeps the previous mapping and says why once
per version of the file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import yaml

# The rule for device strings (sensor names) is the payload's: one definition of what is printable.
from exporter.payload import MAX_TEXT_LENGTH, unprintable

if TYPE_CHECKING:
    from exporter.config import Config

log = logging.getLogger(__name__)

# The labels a serial may carry, in this order; the line protocol's tags and the metrics' labels use them.
LABEL_KEYS = ("site", "zone", "region", "building", "floor")
MAX_LABEL_LENGTH = MAX_TEXT_LENGTH
# A bad value is quoted in a message up to this many characters (the rest is counted, not shown).
MAX_SHOWN = 120
# Far more than any chain's sensors need (2,000 sensors with five labels are about 300 kB).
MAX_FILE_BYTES = 16 * 1024 * 1024
# Where ``serve`` keeps the marker that SIGHUP replaces, in its runtime (metrics) directory.
RELOAD_MARKER_NAME = "sensors-file.reload"

_TAG = "tag:yaml.org,2002:"
# Scalars taken as text as written: strings, and numbers (``floor: 1`` is "1", ``floor: 01`` is "01").
_TEXT_TAGS = frozenset({f"{_TAG}str", f"{_TAG}int", f"{_TAG}float"})
# What YAML would read as something else: the reader says to quote it.
_READS_AS = {
    f"{_TAG}bool": "a boolean",
    f"{_TAG}null": "null",
    f"{_TAG}timestamp": "a date",
    f"{_TAG}merge": "a merge key",
    f"{_TAG}value": "a value key",
}
_CATEGORY_NAMES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
_LABELS_TEXT = ", ".join(LABEL_KEYS)
_EMPTY: Mapping[str, str] = MappingProxyType({})

Assigned = Mapping[str, Mapping[str, str]]


# libyaml composes a 2,000-sensor file ten times faster than PyYAML's own parser (a reload should not hold
# a gevent worker's loop for long); PyYAML's parser reads what libyaml refuses, for the same messages
# with or without libyaml.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def _compose(text: str) -> yaml.Node | None:
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


class SensorsFileError(ValueError):
    """The sensors file cannot be used; the message is ``<path>:<line>: <what is wrong and the fix>``."""


def shown(value: str) -> str:
    """``value`` quoted for a message, escaped, and at most ``MAX_SHOWN`` characters of it."""
    if len(value) <= MAX_SHOWN:
        return repr(value)
    return f"{value[:MAX_SHOWN]!r}... ({len(value)} characters)"


def _named(serial: str) -> str:
    """A valid serial as a message names it: as it is, unless a custom pattern lets it be long."""
    return serial if len(serial) <= MAX_SHOWN and serial.isprintable() else shown(serial)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _READS_AS.get(node.tag, "text")


class _Reader:
    """Walks the composed YAML nodes of one file, so that every error can name its line."""

    def __init__(self, path: Path, serial_pattern: re.Pattern[str]) -> None:
        self.path = path
        self.pattern = serial_pattern

    def error(self, node: yaml.Node | None, message: str) -> SensorsFileError:
        line = node.start_mark.line + 1 if node is not None else 1
        return SensorsFileError(f"{self.path}:{line}: {message}")

    def read(self) -> dict[str, dict[str, str]]:
        try:
            with self.path.open("rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise SensorsFileError(
                f"{self.path}: cannot read the sensors file ({exc.strerror or exc}); check the path "
                "(--sensors-file, AXIS_EXPORTER_SENSORS_FILE) and that this user may read it"
            ) from None
        if len(data) > MAX_FILE_BYTES:
            raise SensorsFileError(
                f"{self.path}:1: the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
                "a sensors file lists serials and their labels, nothing else"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise SensorsFileError(
                f"{self.path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02X}); save the file as UTF-8"
            ) from None
        try:
            root = _compose(text)
        except yaml.MarkedYAMLError as exc:
            raise self.yaml_error(exc) from None
        except yaml.YAMLError as exc:
            raise SensorsFileError(f"{self.path}:1: not valid YAML: {exc}") from None
        except RecursionError:
            raise SensorsFileError(f"{self.path}:1: not valid YAML: nested too deeply") from None
        return self.document(root)

    def yaml_error(self, exc: yaml.MarkedYAMLError) -> SensorsFileError:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        column = f" (column {mark.column + 1})" if mark is not None else ""
        parts = []
        if exc.context:
            context_mark = exc.context_mark
            at = context_mark.line + 1 if context_mark is not None else line
            parts.append(f"{exc.context}" + (f" (line {at})" if at != line else ""))
        if exc.problem:
            parts.append(str(exc.problem))
        problem = ", ".join(parts) or "cannot be read"
        problem = problem if len(problem) <= MAX_SHOWN else problem[: MAX_SHOWN - 3] + "..."
        if "'\\t'" in problem:
            fix = "indent with spaces: YAML does not allow tabs there"
        elif mark is not None and mark.column > 1024 and exc.problem == "mapping values are not allowed here":
            fix = "a key (a serial or a label) in YAML is at most 1024 characters long"
        else:
            fix = "check the indentation, and quote values that hold ': ' or start with a special character"
        return SensorsFileError(f"{self.path}:{line}: not valid YAML{column}: {problem}; {fix}")

    def document(self, root: yaml.Node | None) -> dict[str, dict[str, str]]:
        if root is None:
            raise self.error(
                None,
                "the file is empty; it needs a top-level 'sensors:' mapping serials to labels "
                "(write 'sensors: {}' for none)",
            )
        if not isinstance(root, yaml.MappingNode):
            raise self.error(
                root, f"the top level is {_kind(root)}; it must be a mapping with the one key 'sensors'"
            )
        sensors: yaml.Node | None = None
        sensors_line = 0
        for key, value in root.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name != "sensors":
                what = shown(name) if isinstance(name, str) else _kind(key)
                raise self.error(
                    key,
                    f"unknown top-level key {what}; the only key is 'sensors' "
                    "(serials go under it, indented)",
                )
            if sensors is not None:
                raise self.error(key, f"'sensors' appears twice (first on line {sensors_line}); keep one")
            sensors, sensors_line = value, key.start_mark.line + 1
        if sensors is None:
            raise self.error(root, "no 'sensors' key; put the serials under a top-level 'sensors:'")
        return self.sensors(sensors)

    def sensors(self, node: yaml.Node) -> dict[str, dict[str, str]]:
        if isinstance(node, yaml.ScalarNode) and node.tag == f"{_TAG}null":
            return {}  # "sensors:" with every entry commented out
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                node,
                f"'sensors' is {_kind(node)}; it must map serials to labels, "
                "e.g. 'ACCC8EF3D92E: {site: Store 12}'",
            )
        result: dict[str, dict[str, str]] = {}
        lines: dict[str, int] = {}
        for key, value in node.value:
            serial = self.serial(key)
            line = key.start_mark.line + 1
            if serial in lines:
                raise self.error(
                    key,
                    f"serial {_named(serial)} appears again (first on line {lines[serial]}); "
                    "list each serial once",
                )
            lines[serial] = line
            result[serial] = self.labels(serial, key, value)
        return result

    def serial(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _TEXT_TAGS:
            raise self.error(node, f"a serial is {_kind(node)}; give the serial as text, e.g. ACCC8EF3D92E")
        raw: str = node.value
        serial = raw.strip().upper()
        if not serial.isascii() or not self.pattern.fullmatch(serial):
            raise self.error(
                node,
                f"{shown(raw)} is not a serial (pattern {self.pattern.pattern}, upper-cased; an Axis serial "
                "is the 12 hexadecimal digits of its MAC address); to accept other serials set "
                "AXIS_EXPORTER_SERIAL_PATTERN",
            )
        return serial

    def labels(self, serial: str, key: yaml.Node, node: yaml.Node) -> dict[str, str]:
        if not isinstance(node, yaml.MappingNode) or not node.value:
            where = key if isinstance(node, yaml.ScalarNode) and node.tag == f"{_TAG}null" else node
            raise self.error(
                where,
                f"serial {_named(serial)} has no labels; give them as a mapping on indented lines below it, "
                f"e.g. 'site: Store 12' (labels: {_LABELS_TEXT})",
            )
        found: dict[str, str] = {}
        lines: dict[str, int] = {}
        for label_node, value in node.value:
            label = label_node.value if isinstance(label_node, yaml.ScalarNode) else None
            if label not in LABEL_KEYS:
                what = shown(label) if isinstance(label, str) else _kind(label_node)
                raise self.error(
                    label_node,
                    f"unknown label {what} for serial {_named(serial)}; the labels are {_LABELS_TEXT}",
                )
            assert isinstance(label, str)
            if label in lines:
                raise self.error(
                    label_node,
                    f"label {label} appears twice for serial {_named(serial)} "
                    f"(first on line {lines[label]}); keep one",
                )
            lines[label] = label_node.start_mark.line + 1
            found[label] = self.value(serial, label, value)
        return {label: found[label] for label in LABEL_KEYS if label in found}

    def value(self, serial: str, label: str, node: yaml.Node) -> str:
        what = f"label {label} of serial {_named(serial)}"
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} is {_kind(node)}; give text, e.g. '{label}: Store 12 Berlin'")
        if node.tag == f"{_TAG}null":
            raise self.error(node, f"{what} is empty; give text, or leave the label out")
        if node.tag not in _TEXT_TAGS:
            tag = "!!" + node.tag.removeprefix(_TAG) if node.tag.startswith(_TAG) else node.tag
            reads_as = _READS_AS.get(node.tag, f"the type {shown(tag)}")
            raise self.error(
                node, f"{what} reads as {reads_as} ({shown(node.value)}); put it in quotes to keep it as text"
            )
        text: str = node.value.strip()
        if not text:
            raise self.error(node, f"{what} is empty; give text, or leave the label out")
        if len(text) > MAX_LABEL_LENGTH:
            raise self.error(
                node,
                f"{what} has {len(text)} characters ({shown(text)}); at most {MAX_LABEL_LENGTH} are allowed",
            )
        found = unprintable(text)
        if found is not None:
            character, category = found
            raise self.error(
                node,
                f"{what} holds U+{ord(character):04X}, {_CATEGORY_NAMES.get(category, category)}; "
                "labels are printable text on one line",
            )
        return text


def load_sensors_file(path: Path, serial_pattern: re.Pattern[str]) -> dict[str, dict[str, str]]:
    """Serial -> labels from the sensors file at ``path``; SensorsFileError naming the line and rule."""
    return _Reader(path, serial_pattern).read()


def format_sensors_file(assigned: Assigned, header: str = "") -> str:
    """``assigned`` (serial -> labels) as the text of a sensors file, ``header`` as comment lines on top."""
    for serial, labels in assigned.items():
        unknown = sorted(set(labels) - set(LABEL_KEYS))
        if unknown:
            raise ValueError(
                f"serial {_named(serial)}: unknown label(s) {', '.join(unknown)}; use {_LABELS_TEXT}"
            )
    document = {
        "sensors": {
            serial: {key: labels[key] for key in LABEL_KEYS if key in labels}
            for serial, labels in assigned.items()
        }
    }
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return comments + body


def reload_marker_for(runtime_dir: Path | None) -> Path | None:
    """The reload marker in ``serve``'s runtime directory (None without one: no SIGHUP reloads)."""
    return runtime_dir / RELOAD_MARKER_NAME if runtime_dir is not None else None


def touch_reload_marker(marker: Path) -> None:
    """Replace the marker by a new file, so every process sees it changed (a new inode, whatever the
    file system's time resolution)."""
    temporary = marker.with_name(f".{marker.name}.{os.getpid()}")
    temporary.write_text(f"{time.time_ns()}\n", encoding="ascii")
    os.replace(temporary, marker)


_State = tuple[int, int, int] | None


def _state(path: Path | None) -> _State:
    """What says that a file changed: its mtime (ns), size and inode; None when it is not there."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def _frozen(mapping: Mapping[str, Mapping[str, str]]) -> Assigned:
    return MappingProxyType({serial: MappingProxyType(dict(labels)) for serial, labels in mapping.items()})


class SensorsFile:
    """The labels of each serial, from the sensors file, following its changes (one per process).

    ``labels()`` is on the hot path: it answers from memory and looks at the file and the reload marker
    (one ``os.stat`` each) at most once per ``check_seconds``. The mapping is replaced whole, never
    changed in place, so a reader sees one version of the file or the next, never a mix. Thread-safe:
    with threads (the admin process) and with greenlets (the gevent workers, which monkey-patch
    ``threading`` before they build one).
    """

    def __init__(
        self,
        path: Path | None,
        serial_pattern: re.Pattern[str],
        *,
        reload_marker: Path | None = None,
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the file at once (SensorsFileError if it is broken); ``path=None``: no file, no labels.

        ``clock`` (seconds, monotonic) is for tests that step time themselves.
        """
        self.path = path
        self.serial_pattern = serial_pattern
        self.reload_marker = reload_marker
        self.check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._mapping: Assigned = _frozen({})
        self._file_state: _State = None  # what the last look at the file saw
        self._loaded_state: _State = None  # the version the mapping came from
        self._marker_state: _State = None
        self._failed_state: _State = None  # the file version whose failure was logged last
        self._failed_logged = False
        self._next_check = 0.0
        if path is not None:
            self._file_state, self._marker_state = _state(path), _state(reload_marker)
            self._loaded_state = self._file_state
            self._mapping = _frozen(load_sensors_file(path, serial_pattern))
            self._next_check = self._clock() + check_seconds

    @classmethod
    def from_config(cls, config: Config) -> SensorsFile:
        """The file ``config`` names, with the reload marker in its runtime directory (if any)."""
        return cls(
            config.sensors_file,
            config.limits.serial_pattern,
            reload_marker=reload_marker_for(config.prometheus_multiproc_dir),
        )

    def child(self, *, reload_marker: Path | None, check_seconds: float | None = None) -> SensorsFile:
        """A copy for a process forked from this one (a worker, the admin process): it starts from this
        mapping and never raises, so a broken file cannot stop a worker from booting; then it follows the
        file and the marker on its own."""
        copy = SensorsFile(
            None,
            self.serial_pattern,
            reload_marker=reload_marker,
            check_seconds=self.check_seconds if check_seconds is None else check_seconds,
            clock=self._clock,
        )
        copy.path = self.path
        copy._mapping = self._mapping
        # Compared with the version this mapping came from: a copy made while the file is broken says so.
        copy._file_state = copy._loaded_state = self._loaded_state
        # The marker as it is now: this mapping already includes every reload asked for until now.
        copy._marker_state = _state(reload_marker)
        copy._next_check = self._clock()  # the file may have changed since this one loaded it
        return copy

    def labels(self, serial: str) -> Mapping[str, str]:
        """The labels of ``serial`` (upper case, as stored); empty when the file does not assign it."""
        if self.path is not None and self._clock() >= self._next_check:
            self.check()
        return self._mapping.get(serial.upper(), _EMPTY)

    def assigned(self) -> Assigned:
        """Every serial the file assigns, with its labels (one consistent version of the file)."""
        if self.path is not None and self._clock() >= self._next_check:
            self.check()
        return self._mapping

    def reload(self) -> bool:
        """Read the file now; True if it was loaded, False if it is broken (the previous mapping stays).

        Either outcome is logged, with the file's line and rule when it failed.
        """
        if self.path is None:
            return False
        with self._lock:
            self._next_check = self._clock() + self.check_seconds
            return self._load(_state(self.path), _state(self.reload_marker), always_log=True)

    def watch(self) -> threading.Thread | None:
        """Look for changes every ``check_seconds`` in a daemon thread (a greenlet in a gevent worker), so
        that this process reloads, and says so, without waiting for a push to ask for labels."""
        if self.path is None:
            return None
        thread = threading.Thread(target=self._watch, name="sensors-file", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the thread ``watch`` started."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                self.check()
            except Exception:  # a bug: say so, and keep watching with the mapping there is
                log.exception("sensors file %s: checking for changes failed", self.path)

    def check(self) -> None:
        """Reload if the file or the marker changed; at most once per ``check_seconds``, never waiting."""
        if self.path is None or not self._lock.acquire(blocking=False):
            return  # another thread is checking: answer with the mapping there is
        try:
            now = self._clock()
            if now < self._next_check:
                return
            self._next_check = now + self.check_seconds
            file_state, marker_state = _state(self.path), _state(self.reload_marker)
            if file_state != self._file_state or marker_state != self._marker_state:
                self._load(file_state, marker_state, always_log=False)
        finally:
            self._lock.release()

    def _load(self, file_state: _State, marker_state: _State, *, always_log: bool) -> bool:
        """Load the file (the caller holds the lock); states are what os.stat said before reading."""
        assert self.path is not None
        self._file_state, self._marker_state = file_state, marker_state
        try:
            mapping = load_sensors_file(self.path, self.serial_pattern)
        except SensorsFileError as exc:
            if always_log or not self._failed_logged or file_state != self._failed_state:
                log.warning(
                    "sensors file %s: kept the previous %d sensors because %s",
                    self.path,
                    len(self._mapping),
                    exc,
                )
            self._failed_state, self._failed_logged = file_state, True
            return False
        self._mapping, self._loaded_state = _frozen(mapping), file_state
        self._failed_state, self._failed_logged = None, False
        log.info("sensors file %s reloaded: %d sensors", self.path, len(mapping))
        return True
