"""Sensors spread over sites, each site in its own time zone, and the sensors file that labels them.

``--sites N`` makes sites "Site 1".."Site N"; sensor k (from 1) goes to site ((k - 1) mod N) + 1 as
"Entrance E", E counting the sensors already at that site, so sites fill evenly. Site j takes the j-th
time zone in turn (the ``--timezone`` options, by default ``SITE_TIME_ZONES``: a day apart enough that
"today" differs between them most of the time).

``--sensors-file`` takes the serials and labels of an existing file instead. The time zone rule is the
same: the sites, in the order they first appear in the file, take the time zones in turn; sensors
without a ``site`` label count as one more site. Time zones are the simulator's business, never a label:
a camera reports its own zone in every push.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from exporter.sensorsfile import LABEL_KEYS, format_sensors_file
from exporter.simulator.device import (
    DEFAULT_FIRST_IP,
    DEFAULT_SERIAL_PREFIX,
    Flavour,
    SensorIdentity,
    check_time_zone,
    make_identities,
)

# Far apart: Berlin UTC+1/+2, New York UTC-5/-4, Tokyo UTC+9 (no DST), Sydney UTC+10/+11 (southern DST).
SITE_TIME_ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
SENSORS_PER_SITE = 2  # what --sites gives without --sensors: two entrances each


def site_name(number: int) -> str:
    """The name of site ``number`` (from 1)."""
    return f"Site {number}"


def entrance_name(number: int) -> str:
    """The name of entrance ``number`` (from 1) of a site: its ``zone`` label."""
    return f"Entrance {number}"


def site_identities(
    count: int,
    sites: int,
    *,
    time_zones: Sequence[str] = SITE_TIME_ZONES,
    flavour: Flavour = "3d",
    serial_prefix: str = DEFAULT_SERIAL_PREFIX,
    name_prefix: str | None = None,
    first_ip: str = DEFAULT_FIRST_IP,
) -> list[SensorIdentity]:
    """``count`` sensors spread over ``sites`` sites, each site in its own time zone (taken in turn)."""
    if sites < 1:
        raise ValueError("at least one site")
    if count < sites:
        raise ValueError(f"{sites} sites need at least {sites} sensors, not {count}")
    zones = _zones(time_zones)
    identities = make_identities(
        count, flavour=flavour, serial_prefix=serial_prefix, name_prefix=name_prefix, first_ip=first_ip
    )
    placed = []
    for index, identity in enumerate(identities):
        site = index % sites
        placed.append(
            dataclasses.replace(
                identity,
                time_zone=zones[site % len(zones)],
                labels=(("site", site_name(site + 1)), ("zone", entrance_name(index // sites + 1))),
            )
        )
    return placed


def identities_from_sensors_file(
    assigned: Mapping[str, Mapping[str, str]],
    *,
    time_zones: Sequence[str] = SITE_TIME_ZONES,
    flavour: Flavour = "3d",
    name_prefix: str | None = None,
    first_ip: str = DEFAULT_FIRST_IP,
) -> list[SensorIdentity]:
    """One sensor per serial of a sensors file (``load_sensors_file``), with its labels; the sites, in the
    order they first appear, take the time zones in turn (sensors without a site count as one site)."""
    if not assigned:
        raise ValueError("the sensors file lists no sensors")
    zones = _zones(time_zones)
    site_zone: dict[str | None, str] = {}
    base_ip = ipaddress.IPv4Address(first_ip)
    identities = []
    for index, (serial, labels) in enumerate(assigned.items()):
        site = labels.get("site")
        if site not in site_zone:
            site_zone[site] = zones[len(site_zone) % len(zones)]
        identities.append(
            SensorIdentity(
                name=f"axis-{serial.lower()}" if name_prefix is None else f"{name_prefix}{index + 1}",
                serial=serial,
                time_zone=site_zone[site],
                flavour=flavour,
                ip_address=str(base_ip + index),
                labels=tuple((key, labels[key]) for key in LABEL_KEYS if key in labels),
            )
        )
    return identities


def site_time_zones(identities: Iterable[SensorIdentity]) -> dict[str, str]:
    """Site -> the time zone of its first sensor, in order of appearance (sensors without a site left out)."""
    zones: dict[str, str] = {}
    for identity in identities:
        if identity.site is not None:
            zones.setdefault(identity.site, identity.time_zone)
    return zones


def sensors_file_text(identities: Sequence[SensorIdentity]) -> str:
    """The sensors file that gives ``identities`` their labels (``serve --sensors-file``)."""
    unlabelled = [identity.serial for identity in identities if not identity.labels]
    if unlabelled:
        raise ValueError(
            f"{len(unlabelled)} sensor(s) have no labels (e.g. {unlabelled[0]}): give them sites (--sites)"
        )
    header = [
        "Written by axis-exporter simulate; serve --sensors-file THIS-FILE labels the simulated sensors.",
        "Each site's time zone (set in the cameras, never here):",
        *(f"  {site}: {zone}" for site, zone in site_time_zones(identities).items()),
    ]
    return format_sensors_file(
        {identity.serial: identity.label_map for identity in identities}, header="\n".join(header)
    )


def _zones(time_zones: Sequence[str]) -> list[str]:
    if not time_zones:
        raise ValueError("at least one time zone")
    return [check_time_zone(zone) for zone in time_zones]
