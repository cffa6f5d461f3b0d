"""The device simulator: V0_4 payloads, realistic deterministic counts, the device's re-sends.

Delivery is tested against a small real HTTP(S) server on 127.0.0.1 (tests.pushserver) that answers
scripted status codes and stores what it acknowledged the way InfluxDB does (same sensor and minute
overwrites).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from click.testing import CliRunner

from exporter.certs import issue_certificates
from exporter.simulator import (
    MinuteCount,
    SensorIdentity,
    SimulatedSensor,
    SimulationConfig,
    Summary,
    Totals,
    TrafficModel,
    connection_test_payload,
    data_payload,
    encode_data_push,
    make_identities,
    run_simulation,
)
from exporter.simulator.command import parse_duration, simulate
from exporter.simulator.runner import next_boundary
from exporter.simulator.traffic import DEFAULT_OPENING_HOURS
from tests.pushserver import Answer, PushServer, always, fail_first_data_push, push_server, sequence

UTC = dt.UTC


def utc(text: str) -> dt.datetime:
    """Parse a UTC time written like the device does."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def fast_config(url: str, **overrides: Any) -> SimulationConfig:
    """A fast-forward run over a fixed hour, one sensor, quick retries: the base for delivery tests."""
    settings: dict[str, Any] = {
        "url": url,
        "sensors": make_identities(1),
        "interval_minutes": 5,
        "duration": dt.timedelta(hours=1),
        "fast": True,
        "start": utc("2021-04-13T09:00:00"),
        "retry_delay": 0.0,
        "drain": 2.0,
        "timeout": 5.0,
    }
    settings.update(overrides)
    return SimulationConfig(**settings)


def assert_delivered_matches_store(summary: Summary, server: PushServer) -> None:
    """The simulator's delivered sums equal what the receiver stored, per sensor and overall."""
    for sensor in summary.sensors:
        stored = server.stored_totals(sensor.serial)
        delivered = sensor.delivered
        assert stored == {
            "intervals": delivered.intervals,
            "count_in": delivered.count_in,
            "count_out": delivered.count_out,
            "adults_in": delivered.adults_in,
            "adults_out": delivered.adults_out,
        }, sensor.serial
    assert server.stored_totals()["intervals"] == summary.delivered.intervals


# --- payloads -------------------------------------------------------------------------------------------


STOCKHOLM_3D = SensorIdentity(
    name="axis-accc8ef3d92e", serial="ACCC8EF3D92E", time_zone="Europe/Stockholm", ip_address="192.168.1.106"
)


def sample_minutes() -> list[MinuteCount]:
    """Three one-minute measurements like the guide's sample push (09:19-09:22 UTC)."""
    sensor = SimulatedSensor(STOCKHOLM_3D, TrafficModel(seed=1), keep_from=utc("2021-04-13T09:19:00"))
    return list(sensor.minutes(utc("2021-04-13T09:19:00"), utc("2021-04-13T09:22:00")))


def test_data_payload_has_the_v04_shape() -> None:
    """Field names, order, time formats and local times match the guide's sample push."""
    payload = data_payload(STOCKHOLM_3D, sample_minutes(), utc("2021-04-13T09:22:24"))
    assert list(payload) == ["apiName", "apiVersion", "utcSent", "localSent", "data", "sensor"]
    assert payload["apiName"] == "Axis Retail Data" and payload["apiVersion"] == "0.4"
    assert payload["utcSent"] == "2021-04-13T09:22:24Z"
    assert payload["localSent"] == "2021-04-13T11:22:24"  # CEST, zoneinfo
    data = payload["data"]
    assert (data["utcFrom"], data["utcTo"]) == ("2021-04-13T09:19:00Z", "2021-04-13T09:22:00Z")
    assert (data["localFrom"], data["localTo"]) == ("2021-04-13T11:19:00", "2021-04-13T11:22:00")
    assert [m["utcFrom"] for m in data["measurements"]] == [
        "2021-04-13T09:19:00Z",
        "2021-04-13T09:20:00Z",
        "2021-04-13T09:21:00Z",
    ]
    first = data["measurements"][0]
    assert list(first) == ["kind", "utcFrom", "utcTo", "localFrom", "localTo", "items"]
    assert first["kind"] == "people-counts"
    assert (first["utcTo"], first["localFrom"], first["localTo"]) == (
        "2021-04-13T09:20:00Z",
        "2021-04-13T11:19:00",
        "2021-04-13T11:20:00",
    )
    for measurement in data["measurements"]:
        assert [item["direction"] for item in measurement["items"]] == ["in", "out"]
        for item in measurement["items"]:
            assert set(item) == {"direction", "count", "adults"}
            assert 0 <= item["adults"] <= item["count"]
    assert payload["sensor"] == {
        "application": "AXIS 3D People Counter",
        "applicationVersion": "10.5",
        "timeZone": "Europe/Stockholm",
        "name": "axis-accc8ef3d92e",
        "serial": "ACCC8EF3D92E",
        "ipAddress": "192.168.1.106",
    }


def test_2d_flavour_has_no_adults() -> None:
    """AXIS People Counter (2D) reports count only."""
    identity = make_identities(1, flavour="2d")[0]
    sensor = SimulatedSensor(identity, TrafficModel(), keep_from=utc("2021-04-13T12:00:00"))
    minutes = list(sensor.minutes(utc("2021-04-13T12:00:00"), utc("2021-04-13T13:00:00")))
    payload = data_payload(identity, minutes, utc("2021-04-13T13:00:05"))
    assert payload["sensor"]["application"] == "AXIS People Counter"
    items = [item for m in payload["data"]["measurements"] for item in m["items"]]
    assert items and all(set(item) == {"direction", "count"} for item in items)
    assert sum(item["count"] for item in items) > 0  # lunchtime on a Tuesday


def test_connection_test_payload_has_no_data() -> None:
    """'Test connection' is the envelope and sensor block without `data`."""
    payload = connection_test_payload(STOCKHOLM_3D, utc("2021-03-18T14:55:12"))
    assert "data" not in payload
    assert payload["localSent"] == "2021-03-18T15:55:12"  # CET in March before the switch
    assert payload["sensor"]["serial"] == "ACCC8EF3D92E"


def test_encoded_push_equals_dict_payload() -> None:
    """The streaming encoder (used for 90-day pushes) writes exactly the dict payload, and sums it."""
    minutes = sample_minutes()
    sent = utc("2021-04-13T09:22:24")
    body, totals = encode_data_push(STOCKHOLM_3D, iter(minutes), sent)
    assert orjson.loads(body) == data_payload(STOCKHOLM_3D, minutes, sent)
    assert totals == Totals.of(minutes)
    with pytest.raises(ValueError, match="at least one"):
        encode_data_push(STOCKHOLM_3D, iter([]), sent)


def test_dst_switch_keeps_utc_continuous() -> None:
    """Across the EU switch (01:00 UTC) UTC minutes are continuous while local time jumps 01:59 -> 03:00."""
    sensor = SimulatedSensor(STOCKHOLM_3D, TrafficModel(), keep_from=utc("2021-03-28T00:58:00"))
    minutes = list(sensor.minutes(utc("2021-03-28T00:58:00"), utc("2021-03-28T01:02:00")))
    payload = data_payload(STOCKHOLM_3D, minutes, utc("2021-03-28T01:02:07"))
    measurements = payload["data"]["measurements"]
    assert [m["utcFrom"][11:16] for m in measurements] == ["00:58", "00:59", "01:00", "01:01"]
    assert [m["localFrom"][11:16] for m in measurements] == ["01:58", "01:59", "03:00", "03:01"]
    assert measurements[1]["localTo"] == "2021-03-28T03:00:00"


def test_non_european_time_zone() -> None:
    """Local times follow the sensor's own zone."""
    identity = make_identities(1, time_zones=["America/Los_Angeles"])[0]
    payload = connection_test_payload(identity, utc("2021-07-01T17:00:00"))
    assert payload["sensor"]["timeZone"] == "America/Los_Angeles"
    assert payload["localSent"] == "2021-07-01T10:00:00"


def test_identities() -> None:
    """Serials are 12 hex digits with the prefix; names default to the device's own; zones rotate."""
    identities = make_identities(3, time_zones=["Europe/Berlin", "Asia/Tokyo"], serial_prefix="b8a44f")
    assert [i.serial for i in identities] == ["B8A44F000001", "B8A44F000002", "B8A44F000003"]
    assert [i.name for i in identities] == ["axis-b8a44f000001", "axis-b8a44f000002", "axis-b8a44f000003"]
    assert [i.time_zone for i in identities] == ["Europe/Berlin", "Asia/Tokyo", "Europe/Berlin"]
    assert [i.ip_address for i in identities] == ["192.168.1.101", "192.168.1.102", "192.168.1.103"]
    assert make_identities(2, name_prefix="Door ")[1].name == "Door 2"
    with pytest.raises(ValueError, match="time zone"):
        make_identities(1, time_zones=["Mars/Olympus"])
    with pytest.raises(ValueError, match="hexadecimal"):
        make_identities(1, serial_prefix="XYZ")


# --- counts ---------------------------------------------------------------------------------------------


def week_of_minutes(seed: int = 7, flavour: Literal["2d", "3d"] = "3d") -> list[MinuteCount]:
    """Monday 2021-04-12 00:00 to Monday 2021-04-19 00:00 local (Stockholm, CEST) for one sensor."""
    identity = make_identities(1, flavour=flavour)[0]
    start, end = utc("2021-04-11T22:00:00"), utc("2021-04-18T22:00:00")
    return list(SimulatedSensor(identity, TrafficModel(seed), keep_from=start).minutes(start, end))


def local_hour(minute: MinuteCount) -> dt.datetime:
    """Local time of a measurement in Stockholm."""
    return minute.start.astimezone(STOCKHOLM_3D.zone)


def test_counts_are_deterministic_and_independent_of_batching() -> None:
    """Same seed, same counts, however the range is split; another seed gives other counts."""
    identity = make_identities(1)[0]
    a, b, c = utc("2021-04-13T09:07:00"), utc("2021-04-13T11:31:00"), utc("2021-04-13T15:00:00")
    whole = list(SimulatedSensor(identity, TrafficModel(3), keep_from=a).minutes(a, c))
    split = SimulatedSensor(identity, TrafficModel(3), keep_from=a)
    assert list(split.minutes(a, b)) + list(split.minutes(b, c)) == whole
    assert len(whole) == (c - a) // dt.timedelta(minutes=1)
    other = list(SimulatedSensor(identity, TrafficModel(4), keep_from=a).minutes(a, c))
    assert other != whole


def test_counts_look_like_a_shop() -> None:
    """Closed at night, busier on Saturday than midweek, daily peaks, in/out balance, adults <= count."""
    minutes = week_of_minutes()
    assert len(minutes) == 7 * 1440
    per_day_in: dict[dt.date, int] = {}
    per_day_out: dict[dt.date, int] = {}
    night = 0
    nulls = 0
    for minute in minutes:
        local = local_hour(minute)
        if minute.items is None:
            nulls += 1
            hours = DEFAULT_OPENING_HOURS[local.weekday()]
            assert hours is not None
            assert not hours[0] <= local.hour * 60 + local.minute < hours[1], "items null only while closed"
            continue
        by_direction = {item.direction: item for item in minute.items}
        for item in minute.items:
            assert item.adults is not None and 0 <= item.adults <= item.count
        per_day_in[local.date()] = per_day_in.get(local.date(), 0) + by_direction["in"].count
        per_day_out[local.date()] = per_day_out.get(local.date(), 0) + by_direction["out"].count
        if 0 <= local.hour < 6:
            night += by_direction["in"].count + by_direction["out"].count
    assert night == 0
    assert nulls > 100  # devices send items null for some quiet minutes
    total_in, total_out = sum(per_day_in.values()), sum(per_day_out.values())
    assert total_in > 5000
    assert abs(total_in - total_out) < 0.03 * total_in
    for day, count_in in per_day_in.items():
        assert abs(count_in - per_day_out[day]) < 0.1 * count_in + 20, day
    saturday, wednesday = dt.date(2021, 4, 17), dt.date(2021, 4, 14)
    assert per_day_in[saturday] > per_day_in[wednesday]
    lunch = sum(m.items[0].count for m in minutes if m.items and local_hour(m).date() == wednesday
                and 12 <= local_hour(m).hour < 13)  # fmt: skip
    opening = sum(m.items[0].count for m in minutes if m.items and local_hour(m).date() == wednesday
                  and 9 <= local_hour(m).hour < 10)  # fmt: skip
    assert lunch > opening


def test_adults_fewer_at_weekend() -> None:
    """More children at weekends: the adult share drops."""
    minutes = week_of_minutes(seed=11)

    def share(weekend: bool) -> float:
        counted = [m for m in minutes if m.items and (local_hour(m).weekday() >= 5) == weekend]
        totals = Totals.of(counted)
        return (totals.adults_in + totals.adults_out) / (totals.count_in + totals.count_out)

    assert share(weekend=True) < share(weekend=False) - 0.05


# --- delivery semantics ---------------------------------------------------------------------------------


def test_everything_delivered_when_receiver_says_200() -> None:
    """Test connection first, then one push per send interval of one-minute measurements, all stored."""
    with push_server() as server:
        summary = run_simulation(fast_config(server.url))
    assert "data" not in server.received[0].payload
    pushes = server.data_pushes()
    assert len(pushes) == 12  # 09:05 ... 10:00
    assert all(len(p.payload["data"]["measurements"]) == 5 for p in pushes)
    assert pushes[0].payload["data"]["utcFrom"] == "2021-04-13T09:00:00Z"
    assert pushes[-1].payload["data"]["utcTo"] == "2021-04-13T10:00:00Z"
    sent = [utc(p.payload["utcSent"][:-1]) for p in server.received]
    assert sent == sorted(sent) and len(set(sent)) == len(sent)
    assert sent[1] - utc("2021-04-13T09:05:00") < dt.timedelta(seconds=15)  # shortly after the boundary
    assert summary.complete and summary.retries == 0 and summary.pushes == 13
    assert summary.answers == {"200": 13}
    assert summary.delivered.intervals == 60
    assert summary.sensors[0].delivered_from == "2021-04-13T09:00:00Z"
    assert summary.sensors[0].delivered_to == "2021-04-13T10:00:00Z"
    assert_delivered_matches_store(summary, server)


def test_non_200_keeps_data_and_resends_everything_since_last_200() -> None:
    """After 503, 500, 401 the next push holds every minute since the last 200, in one push."""
    # request 0: test connection, 1: 09:00-09:05 ok, 2-4 fail, 5: must carry 09:05-09:20.
    with push_server(sequence(200, 200, 503, 500, 401)) as server:
        summary = run_simulation(fast_config(server.url))
    spans = [
        (p.payload["data"]["utcFrom"][11:], p.payload["data"]["utcTo"][11:]) for p in server.data_pushes()
    ]
    assert [f"{start[:5]}-{end[:5]}" for start, end in spans[:6]] == [
        "09:00-09:05",
        "09:05-09:10",
        "09:05-09:15",
        "09:05-09:20",
        "09:05-09:25",
        "09:25-09:30",
    ]
    assert summary.retries == 3
    assert summary.sensors[0].resent_intervals == 5 + 10 + 15
    assert summary.non_200 == {"401": 1, "500": 1, "503": 1}
    assert summary.complete and summary.delivered.intervals == 60
    assert_delivered_matches_store(summary, server)


def test_connection_errors_are_retried_and_ambiguous_ones_not_double_counted() -> None:
    """A dropped connection (even after the receiver stored the data) means re-send; sums count it once."""
    with push_server(sequence(200, "store_then_drop", "drop", 200)) as server:
        summary = run_simulation(fast_config(server.url))
    first_three = server.data_pushes()[:3]
    assert [p.payload["data"]["utcFrom"][11:16] for p in first_three] == ["09:00", "09:00", "09:00"]
    assert summary.connection_errors == {"connection_lost": 2}
    assert summary.retries == 2 and summary.complete
    assert summary.delivered.intervals == 60
    assert_delivered_matches_store(summary, server)


def test_receiver_down_keeps_everything_pending() -> None:
    """Nothing listening: connection errors, nothing delivered, all of it reported as undelivered."""
    with push_server() as server:
        url = server.url  # the port is free again once the server is gone
    summary = run_simulation(fast_config(url, duration=dt.timedelta(minutes=15), drain=0.2, retry_delay=0.05))
    assert summary.delivered.intervals == 0
    assert summary.pending.intervals == 15
    assert summary.connection_errors.get("connect", 0) >= 4
    assert summary.sensors[0].test_connection == "connect"
    assert not summary.complete
    assert "connect" in summary.sensors[0].last_error


def test_drain_delivers_what_the_last_tick_could_not() -> None:
    """A failure at the end of the period is retried during the drain time until a 200 arrives."""
    with push_server(sequence(*([200] * 12), 503, 503, 503)) as server:
        summary = run_simulation(fast_config(server.url, drain=5.0, retry_delay=0.05))
    assert summary.complete and summary.delivered.intervals == 60
    last = server.data_pushes()[-1].payload["data"]
    assert (last["utcFrom"], last["utcTo"]) == ("2021-04-13T09:55:00Z", "2021-04-13T10:00:00Z")
    assert_delivered_matches_store(summary, server)


def test_backfill_in_one_push() -> None:
    """A device that reconnects sends its whole history since the last 200 in one push."""
    with push_server() as server:
        summary = run_simulation(
            fast_config(
                server.url, duration=dt.timedelta(0), backfill=dt.timedelta(days=1), interval_minutes=15
            )
        )
    pushes = server.data_pushes()
    assert len(pushes) == 1
    data = pushes[0].payload["data"]
    assert len(data["measurements"]) == 1440
    assert (data["utcFrom"], data["utcTo"]) == ("2021-04-12T09:00:00Z", "2021-04-13T09:00:00Z")
    assert summary.complete and summary.delivered.intervals == 1440
    assert summary.delivered.null_intervals > 0
    assert_delivered_matches_store(summary, server)


def test_backfill_in_batches_with_a_failure() -> None:
    """With --backfill-batch the history goes oldest first in batches; a failed batch is re-sent."""
    with push_server(sequence(200, 200, 503)) as server:
        summary = run_simulation(
            fast_config(
                server.url,
                duration=dt.timedelta(minutes=30),
                backfill=dt.timedelta(hours=6),
                batch_minutes=100,
            )
        )
    pushes = server.data_pushes()
    sizes = [len(p.payload["data"]["measurements"]) for p in pushes]
    assert sizes[:6] == [100, 100, 100, 100, 60, 5]  # second batch failed and is re-sent whole
    assert pushes[1].payload["data"]["utcFrom"] == pushes[2].payload["data"]["utcFrom"]
    assert summary.complete and summary.delivered.intervals == 6 * 60 + 30
    assert_delivered_matches_store(summary, server)


def test_token_is_sent_as_bearer() -> None:
    """The API token goes in the Authorization header of every push, test connection included."""
    with push_server() as server:
        run_simulation(fast_config(server.url, token="s3cret-token", duration=dt.timedelta(minutes=5)))
    assert len(server.received) == 2
    for request in server.received:
        assert request.headers["Authorization"] == "Bearer s3cret-token"
        assert request.headers["Content-Type"] == "application/json"


def test_many_sensors_random_failures_exact_totals() -> None:
    """Several sensors and zones, 1-minute interval, a third of pushes failing: stored sums = delivered."""
    chooser = random.Random(42)
    answers: list[Answer] = [503, 500, "drop", "store_then_drop", 200, 200, 200, 200, 200, 200, 200, 200]

    def flaky(_index: int, payload: dict[str, Any]) -> Answer:
        return chooser.choice(answers) if "data" in payload else 200

    identities = make_identities(4, flavour="3d", time_zones=["Europe/Stockholm", "America/New_York"])
    with push_server(flaky) as server:
        summary = run_simulation(
            fast_config(
                server.url,
                sensors=identities,
                interval_minutes=1,
                duration=dt.timedelta(hours=3),
                backfill=dt.timedelta(hours=1),
                concurrency=3,
                drain=10.0,
                retry_delay=0.0,
            )
        )
    assert summary.complete, summary.as_dict()
    assert summary.retries > 10
    for sensor in summary.sensors:
        assert sensor.delivered.intervals == 4 * 60
    assert_delivered_matches_store(summary, server)
    # Every minute of the period is stored once per sensor (no gap, no duplicates by key).
    assert len(server.stored) == 4 * 4 * 60


def test_rate_caps_pushes_per_second() -> None:
    """--rate spaces pushes over all sensors."""
    with push_server() as server:
        started = time.monotonic()
        summary = run_simulation(
            fast_config(server.url, sensors=make_identities(2), duration=dt.timedelta(minutes=20), rate=25.0)
        )
        elapsed = time.monotonic() - started
    assert summary.pushes == 2 * (1 + 4)
    assert elapsed >= (summary.pushes - 1) / 25.0 * 0.9


def test_stop_event_ends_a_run_early() -> None:
    """Tests (and Ctrl-C) can stop a long run; the summary says it was interrupted."""
    stop = threading.Event()
    with push_server() as server:
        timer = threading.Timer(0.5, stop.set)
        timer.start()
        started = time.monotonic()
        summary = run_simulation(
            fast_config(server.url, duration=dt.timedelta(days=30), interval_minutes=1, rate=50.0), stop=stop
        )
        timer.join()
    assert time.monotonic() - started < 5
    assert summary.interrupted
    assert 0 < summary.delivered.intervals < 30 * 1440
    assert_delivered_matches_store(summary, server)


def test_realtime_backfill_uses_the_wall_clock() -> None:
    """Without --fast, pushes carry the current time and history ends at the current minute."""
    with push_server() as server:
        before = dt.datetime.now(UTC).replace(microsecond=0)
        summary = run_simulation(
            SimulationConfig(
                url=server.url,
                sensors=make_identities(1),
                backfill=dt.timedelta(hours=2),
                interval_minutes=15,
            )
        )
        after = dt.datetime.now(UTC)
    assert summary.mode == "realtime" and summary.complete
    sent = utc(server.received[-1].payload["utcSent"][:-1])
    assert before <= sent <= after + dt.timedelta(seconds=2)
    data = server.data_pushes()[0].payload["data"]
    assert utc(data["utcTo"][:-1]) == before.replace(second=0) or utc(data["utcTo"][:-1]) == after.replace(
        second=0, microsecond=0
    )
    assert len(data["measurements"]) == 120


@pytest.mark.slow
def test_realtime_pushes_at_the_send_interval() -> None:
    """Real time, 1-minute interval, 2.5 minutes: data pushes right after minute boundaries."""
    with push_server() as server:
        summary = run_simulation(
            SimulationConfig(
                url=server.url,
                sensors=make_identities(1),
                interval_minutes=1,
                duration=dt.timedelta(seconds=150),
            )
        )
    pushes = server.data_pushes()
    assert len(pushes) >= 2 and summary.complete
    for push in pushes:
        sent = utc(push.payload["utcSent"][:-1])
        assert sent.second < 15
        assert len(push.payload["data"]["measurements"]) == 1
    assert_delivered_matches_store(summary, server)


# --- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 made by `axis-exporter certs`."""
    out = tmp_path_factory.mktemp("tls")
    issue_certificates(out, ["127.0.0.1", "localhost"])
    return out


def test_https_with_the_generated_ca(loopback_certs: Path) -> None:
    """With --cacert the simulator verifies the receiver like a camera and delivers over HTTPS."""
    tls = (loopback_certs / "server-cert.pem", loopback_certs / "server-key.pem")
    with push_server(tls=tls) as server:
        summary = run_simulation(fast_config(server.url, cacert=loopback_certs / "CA-cert.pem"))
    assert server.url.startswith("https://")
    assert summary.complete and summary.delivered.intervals == 60
    assert_delivered_matches_store(summary, server)


def test_https_refused_with_another_ca(loopback_certs: Path, tmp_path: Path) -> None:
    """A CA the server's certificate does not chain to: TLS errors, nothing delivered, nothing received."""
    other = issue_certificates(tmp_path / "other", ["127.0.0.1"])
    tls = (loopback_certs / "server-cert.pem", loopback_certs / "server-key.pem")
    with push_server(tls=tls) as server:
        summary = run_simulation(
            fast_config(server.url, cacert=other.ca_cert, duration=dt.timedelta(minutes=10), drain=0.2)
        )
    assert server.received == []
    assert summary.delivered.intervals == 0 and not summary.complete
    assert set(summary.connection_errors) == {"tls"}
    assert "certificate verify failed" in summary.sensors[0].last_error


# --- command line ---------------------------------------------------------------------------------------


def test_cli_run_writes_summary_json(tmp_path: Path) -> None:
    """The command prints a summary, writes the same numbers as JSON, and exits 0 when all was delivered."""
    summary_file = tmp_path / "summary.json"
    with push_server(fail_first_data_push("ACCC8E000002", 503)) as server:
        result = CliRunner().invoke(
            simulate,
            [server.url, "--fast", "--start", "2021-04-13T09:00:00Z", "--duration", "2h", "--sensors", "2",
             "--interval", "15", "--flavour", "2d", "--retry-delay", "0", "--quiet",
             "--summary-json", str(summary_file)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Delivered" in result.output and "non-200: 503: 1" in result.output
    report = orjson.loads(summary_file.read_bytes())
    assert report["complete"] and report["retries"] == 1 and report["non_200"] == {"503": 1}
    assert report["delivered"]["intervals"] == 2 * 120
    assert report["delivered"]["adults_in"] == 0
    assert report["simulated_from"] == "2021-04-13T09:00:00Z"
    assert report["simulated_to"] == "2021-04-13T11:00:00Z"
    for sensor in report["sensors"]:
        stored = server.stored_totals(sensor["serial"])
        assert stored["count_in"] == sensor["delivered"]["count_in"]
        assert stored["count_out"] == sensor["delivered"]["count_out"]
        assert stored["intervals"] == sensor["delivered"]["intervals"]


def test_cli_exits_1_when_data_stays_undelivered() -> None:
    """A receiver that never says 200: exit code 1 and the reason on stderr."""
    with push_server(always(503)) as server:
        result = CliRunner().invoke(
            simulate,
            [
                server.url,
                "--fast",
                "--start",
                "2021-04-13T09:00:00+02:00",
                "--duration",
                "10m",
                "--drain",
                "0.2",
                "--retry-delay",
                "0.05",
                "--quiet",
            ],
        )
    assert result.exit_code == 1
    assert "10 interval(s) not delivered; test connection failed for 1 sensor(s) (503)" in result.output


def test_cli_usage_errors() -> None:
    """Bad options are usage errors (exit 2), not tracebacks."""
    runner = CliRunner()
    assert runner.invoke(simulate, ["http://127.0.0.1:9/push", "--duration", "soon"]).exit_code == 2
    assert runner.invoke(simulate, ["http://127.0.0.1:9/push", "--start", "2021-01-01"]).exit_code == 2
    assert runner.invoke(simulate, ["ftp://127.0.0.1/push", "--fast", "--quiet"]).exit_code == 2
    assert runner.invoke(simulate, ["http://127.0.0.1:9/push", "--timezone", "Nowhere/City"]).exit_code == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("1h30m", 5400), ("45s", 45), ("2w", 14 * 86400), ("0", 0), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    """Durations with units, combinable."""
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


def test_next_boundary_aligns_to_the_interval() -> None:
    """Send times are on 1/5/15-minute boundaries, strictly after the given time."""
    assert next_boundary(utc("2021-04-13T09:07:30"), 5) == utc("2021-04-13T09:10:00")
    assert next_boundary(utc("2021-04-13T09:10:00"), 5) == utc("2021-04-13T09:15:00")
    assert next_boundary(utc("2021-04-13T09:59:59"), 15) == utc("2021-04-13T10:00:00")
