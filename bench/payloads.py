"""Deterministic Axis pushes for the benchmark, shaped like the device writes them (compact JSON)."""

from __future__ import annotations

import datetime as dt
import random

import orjson

API = b'{"apiName":"Axis Retail Data","apiVersion":"0.4",'
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEADY_START = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _utc(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(moment: dt.datetime) -> str:
    return (moment + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")


def sensor_name(index: int) -> str:
    """Name of simulated sensor ``index``."""
    return f"Store {index // 4:03d} Entrance {index % 4}"


def sensor_serial(index: int) -> str:
    """Serial of simulated sensor ``index``."""
    return f"ACCC8E{index:06X}"


def push_body(sensor: int, start: dt.datetime, minutes: int, *, seed: int = 0, adults: bool = True) -> bytes:
    """One push of ``minutes`` one-minute measurements from ``start``; the ``sensor`` object comes last."""
    rng = random.Random(seed * 1_000_003 + sensor)
    parts: list[bytes] = []
    step = dt.timedelta(minutes=1)
    moment = start
    for _ in range(minutes):
        end = moment + step
        count_in, count_out = rng.randrange(0, 30), rng.randrange(0, 30)
        items: list[dict[str, object]] = [
            {"direction": "in", "count": count_in},
            {"direction": "out", "count": count_out},
        ]
        if adults:
            items[0]["adults"] = count_in - count_in // 5
            items[1]["adults"] = count_out - count_out // 5
        parts.append(
            orjson.dumps(
                {
                    "kind": "people-counts",
                    "utcFrom": _utc(moment),
                    "utcTo": _utc(end),
                    "localFrom": _local(moment),
                    "localTo": _local(end),
                    "items": items,
                }
            )
        )
        moment = end
    sent = moment + dt.timedelta(seconds=24)
    span = {
        "utcFrom": _utc(start),
        "utcTo": _utc(moment),
        "localFrom": _local(start),
        "localTo": _local(moment),
    }
    sensor_block = {
        "application": "AXIS 3D People Counter",
        "applicationVersion": "10.5",
        "timeZone": "Europe/Stockholm",
        "name": sensor_name(sensor),
        "serial": sensor_serial(sensor),
        "ipAddress": f"10.{sensor // 65536 % 256}.{sensor // 256 % 256}.{sensor % 256}",
    }
    return b"".join(
        [
            API,
            b'"utcSent":"' + _utc(sent).encode() + b'","localSent":"' + _local(sent).encode() + b'",',
            b'"data":' + orjson.dumps(span)[:-1] + b',"measurements":[',
            b",".join(parts),
            b']},"sensor":' + orjson.dumps(sensor_block) + b"}",
        ]
    )


def backfill_body(days: int = 90, sensor: int = 0) -> bytes:
    """A single push holding ``days`` of one-minute data (90 days: 129,600 measurements, 259,200 items)."""
    return push_body(sensor, START, days * 24 * 60)


def steady_bodies(sensors: int, *, seed: int = 1) -> list[bytes]:
    """One small push per sensor (1-15 one-minute measurements), as many sensors send every few minutes."""
    rng = random.Random(seed)
    bodies = []
    for sensor in range(sensors):
        minutes = rng.randint(1, 15)
        start = STEADY_START + dt.timedelta(minutes=rng.randrange(0, 60))
        bodies.append(push_body(sensor, start, minutes, seed=seed, adults=sensor % 3 != 0))
    return bodies
