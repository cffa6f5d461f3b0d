"""Emulated Axis people counters for commissioning, load and fault tests (see `axis-exporter simulate`)."""

from exporter.simulator.device import (
    Flavour,
    SensorIdentity,
    SimulatedSensor,
    Totals,
    connection_test_payload,
    data_payload,
    encode_data_push,
    make_identities,
)
from exporter.simulator.runner import (
    Progress,
    SensorSummary,
    SimulationConfig,
    Summary,
    run_simulation,
)
from exporter.simulator.sites import (
    SITE_TIME_ZONES,
    identities_from_sensors_file,
    sensors_file_text,
    site_identities,
    site_time_zones,
)
from exporter.simulator.traffic import DirectionCount, MinuteCount, TrafficModel, TrafficProfile
from exporter.simulator.transport import HttpTransport, PushResult, PushTransport

__all__ = [
    "SITE_TIME_ZONES",
    "DirectionCount",
    "Flavour",
    "HttpTransport",
    "MinuteCount",
    "Progress",
    "PushResult",
    "PushTransport",
    "SensorIdentity",
    "SensorSummary",
    "SimulatedSensor",
    "SimulationConfig",
    "Summary",
    "Totals",
    "TrafficModel",
    "TrafficProfile",
    "connection_test_payload",
    "data_payload",
    "encode_data_push",
    "identities_from_sensors_file",
    "make_identities",
    "run_simulation",
    "sensors_file_text",
    "site_identities",
    "site_time_zones",
]
