"""The simulator's sites: sensors spread over sites in far-apart time zones, and their sensors file.

Against the real receiver and InfluxDB: ``serve --sensors-file`` with the file the simulator wrote labels
every simulated count with its site, and the per-site totals in InfluxDB are the simulator's.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from click.testing import CliRunner

from exporter.config import DEFAULT_SERIAL_PATTERN
from exporter.influxd_bridge import LocalInflux
from exporter.sensorsfile import load_sensors_file
from exporter.simulator import (
    SITE_TIME_ZONES,
    SensorIdentity,
    identities_from_sensors_file,
    make_identities,
    sensors_file_text,
    site_identities,
    site_time_zones,
)
from exporter.simulator.command import simulate
from tests.pushserver import push_server
from tests.serveprocess import ExporterFactory

PATTERN = re.compile(DEFAULT_SERIAL_PATTERN)


def placement(identities: list[SensorIdentity]) -> list[tuple[str, str | None, str | None, str]]:
    """(serial, site, zone label, time zone) of each sensor."""
    return [(i.serial, i.site, i.site_zone, i.time_zone) for i in identities]


def test_sites_fill_evenly_each_in_the_next_time_zone() -> None:
    identities = site_identities(7, 3)
    assert placement(identities) == [
        ("ACCC8E000001", "Site 1", "Entrance 1", "Europe/Berlin"),
        ("ACCC8E000002", "Site 2", "Entrance 1", "America/New_York"),
        ("ACCC8E000003", "Site 3", "Entrance 1", "Asia/Tokyo"),
        ("ACCC8E000004", "Site 1", "Entrance 2", "Europe/Berlin"),
        ("ACCC8E000005", "Site 2", "Entrance 2", "America/New_York"),
        ("ACCC8E000006", "Site 3", "Entrance 2", "Asia/Tokyo"),
        ("ACCC8E000007", "Site 1", "Entrance 3", "Europe/Berlin"),
    ]
    assert identities[0].labels == (("site", "Site 1"), ("zone", "Entrance 1"))
    assert site_time_zones(site_identities(5, 5)) == {
        "Site 1": "Europe/Berlin",
        "Site 2": "America/New_York",
        "Site 3": "Asia/Tokyo",
        "Site 4": "Australia/Sydney",
        "Site 5": "Europe/Berlin",
    }
    custom = site_identities(
        4, 4, time_zones=["Asia/Kathmandu", "America/Los_Angeles"], serial_prefix="B8A44F"
    )
    assert [i.time_zone for i in custom] == ["Asia/Kathmandu", "America/Los_Angeles"] * 2
    assert custom[0].serial == "B8A44F000001" and custom[0].name == "axis-b8a44f000001"


def test_site_identities_refuse_what_cannot_be() -> None:
    for call, message in (
        (lambda: site_identities(2, 3), "3 sites need at least 3 sensors, not 2"),
        (lambda: site_identities(2, 0), "at least one site"),
        (lambda: site_identities(2, 2, time_zones=[]), "at least one time zone"),
        (lambda: site_identities(2, 2, time_zones=["Mars/Olympus"]), "unknown time zone"),
        (lambda: SensorIdentity("a", "ACCC8E000001", labels=(("timezone", "x"),)), "unknown label"),
    ):
        try:
            call()
        except ValueError as exc:
            assert message in str(exc), f"expected {message!r}, got {exc}"
        else:
            raise AssertionError(f"no error; expected {message!r}")


def test_the_written_file_loads_and_gives_back_the_same_sensors(tmp_path: Path) -> None:
    identities = site_identities(6, 3)
    path = tmp_path / "sensors.yaml"
    path.write_text(sensors_file_text(identities), encoding="utf-8")
    assigned = load_sensors_file(path, PATTERN)
    assert assigned == {i.serial: i.label_map for i in identities}
    assert identities_from_sensors_file(assigned) == identities, "the round trip changed a sensor"
    text = path.read_text(encoding="utf-8")
    assert "#   Site 2: America/New_York\n" in text, "the header names each site's time zone"
    try:
        sensors_file_text(make_identities(2))
    except ValueError as exc:
        assert "2 sensor(s) have no labels" in str(exc)
    else:
        raise AssertionError("a file for sensors without labels was written")


def test_sites_from_a_sensors_file_take_the_time_zones_in_order_of_first_appearance() -> None:
    assigned = {
        "ACCC8E0000B1": {"site": "Store 12 Berlin", "zone": "Main entrance", "floor": "1"},
        "ACCC8E0000B2": {"site": "Store 40 Boston", "zone": "Main entrance"},
        "ACCC8E0000B3": {"site": "Store 12 Berlin", "zone": "Garage"},
        "ACCC8E0000B4": {"zone": "Loading bay"},
        "ACCC8E0000B5": {"region": "APAC"},
        "ACCC8E0000B6": {"site": "Store 7 Tokyo"},
    }
    identities = identities_from_sensors_file(assigned, time_zones=SITE_TIME_ZONES, name_prefix="Door ")
    assert [i.time_zone for i in identities] == [
        "Europe/Berlin",
        "America/New_York",
        "Europe/Berlin",
        "Asia/Tokyo",  # no site: one more site, the third to appear
        "Asia/Tokyo",
        "Australia/Sydney",
    ]
    assert identities[0].label_map == {"site": "Store 12 Berlin", "zone": "Main entrance", "floor": "1"}
    assert identities[3].site is None and identities[3].site_zone == "Loading bay"
    assert [i.name for i in identities[:2]] == ["Door 1", "Door 2"]
    assert [i.ip_address for i in identities[:2]] == ["192.168.1.101", "192.168.1.102"]


def test_cli_writes_the_sensors_file_without_a_url(tmp_path: Path) -> None:
    path = tmp_path / "sensors.yaml"
    result = CliRunner().invoke(simulate, ["--sites", "3", "--write-sensors-file", str(path)])
    assert result.exit_code == 0, result.output
    assert f"Wrote {path}: 6 sensor(s) at 3 site(s)" in result.output
    assigned = load_sensors_file(path, PATTERN)
    assert len(assigned) == 6 and {labels["site"] for labels in assigned.values()} == {
        "Site 1",
        "Site 2",
        "Site 3",
    }
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was left behind"

    runner = CliRunner()
    for args, message in (
        (["--write-sensors-file", str(path)], "--write-sensors-file needs sites"),
        ([], "Missing argument 'URL'"),
        (["http://127.0.0.1:9/push", "--sensors-file", str(path), "--sites", "2"], "drop --sites"),
        (["http://127.0.0.1:9/push", "--sensors-file", str(path), "--sensors", "2"], "drop --sensors"),
        (["http://127.0.0.1:9/push", "--sites", "4", "--sensors", "3"], "4 sites need at least 4 sensors"),
        (["--sites", "2", "--write-sensors-file", str(tmp_path / "missing" / "s.yaml")], "No such file"),
    ):
        result = runner.invoke(simulate, args)
        assert result.exit_code in (1, 2), f"{args}: exit {result.exit_code}\n{result.output}"
        assert message in result.output, f"{args}: {result.output}"
    broken = tmp_path / "broken.yaml"
    broken.write_text("sensors:\n  ACCC8E000001: {colour: red}\n", encoding="utf-8")
    result = runner.invoke(simulate, ["http://127.0.0.1:9/push", "--sensors-file", str(broken)])
    assert result.exit_code == 2 and "broken.yaml:2: unknown label 'colour'" in result.output, result.output


def test_cli_run_over_sites_reports_totals_per_site(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    sensors_file = tmp_path / "sensors.yaml"
    with push_server() as server:
        result = CliRunner().invoke(
            simulate,
            [server.url, "--sites", "2", "--sensors", "5", "--fast", "--start", "2021-04-13T06:00:00Z",
             "--duration", "3h", "--interval", "15", "--quiet", "--retry-delay", "0",
             "--timezone", "Europe/Stockholm", "--timezone", "America/New_York",
             "--write-sensors-file", str(sensors_file), "--summary-json", str(summary_file)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = orjson.loads(summary_file.read_bytes())
    expected: dict[str, dict[str, int]] = {}
    for sensor in report["sensors"]:
        site = expected.setdefault(sensor["labels"]["site"], {"count_in": 0, "count_out": 0})
        site["count_in"] += server.stored_totals(sensor["serial"])["count_in"]
        site["count_out"] += server.stored_totals(sensor["serial"])["count_out"]
    assert {
        site: {k: v[k] for k in ("count_in", "count_out")} for site, v in report["sites"].items()
    } == expected
    assert report["sites"]["Site 1"]["count_in"] > 0, "a shop open at 08:00-11:00 local counts people"
    zones = {r.payload["sensor"]["serial"]: r.payload["sensor"]["timeZone"] for r in server.received}
    assert zones["ACCC8E000001"] == "Europe/Stockholm" and zones["ACCC8E000002"] == "America/New_York"
    site_1 = report["sites"]["Site 1"]
    line = (
        rf"^Site 1 +Europe/Stockholm +3 +{site_1['intervals']} +{site_1['count_in']} +{site_1['count_out']}$"
    )
    assert re.search(line, result.output, re.MULTILINE), f"no per-site line in:\n{result.output}"
    assert load_sensors_file(sensors_file, PATTERN)["ACCC8E000005"] == {
        "site": "Site 1",
        "zone": "Entrance 3",
    }


def test_serve_labels_the_simulated_sites(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    """simulate writes the file, serve labels with it, and InfluxDB's per-site sums are the simulator's."""
    sensors_file = tmp_path / "sensors.yaml"
    result = CliRunner().invoke(simulate, ["--sites", "3", "--write-sensors-file", str(sensors_file)])
    assert result.exit_code == 0, result.output
    server = exporter_server("--sensors-file", str(sensors_file), workers=2)
    summary_file = tmp_path / "summary.json"
    result = CliRunner().invoke(
        simulate,
        [f"{server.url}/push", "--sensors-file", str(sensors_file), "--fast",
         "--start", "2021-04-13T00:00:00Z", "--duration", "1d", "--interval", "15", "--quiet",
         "--retry-delay", "0", "--summary-json", str(summary_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = orjson.loads(summary_file.read_bytes())
    assert set(report["sites"]) == {"Site 1", "Site 2", "Site 3"}
    rows = influx.query(
        bucket, """SELECT sum("count") AS total FROM people_count GROUP BY "site", "direction" """
    )
    stored = {(row["site"], row["direction"]): row["total"] for row in rows}
    expected = {
        (site, direction): totals[f"count_{direction}"]
        for site, totals in report["sites"].items()
        for direction in ("in", "out")
    }
    assert stored == expected, f"InfluxDB per site {stored} != simulated {expected}"
    rows = influx.query(
        bucket, """SELECT count("count") FROM people_count WHERE "zone" = '' GROUP BY "serial" """
    )
    assert rows == [], f"counts stored without the sensors file's zone label: {rows}"
