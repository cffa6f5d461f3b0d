"""The local InfluxDB with the switches the fault tests pull: storage that stops, freezes or loses its
bridge, and comes back on the same ports."""

from __future__ import annotations

import signal

from exporter.influxd_bridge import LocalInflux


class FaultableInflux(LocalInflux):
    """``LocalInflux`` whose influxd and nginx bridge a test can stop, freeze and restart."""

    def stop_influxd(self) -> None:
        """Stop influxd: the bridge answers 502, as with a storage outage behind a proxy."""
        if self._influxd is not None:
            self._influxd.stop()

    def start_influxd(self) -> None:
        """Start influxd again on its port, with its data."""
        self._start_influxd(initial=False)

    def pause_influxd(self) -> None:
        """Freeze influxd (SIGSTOP): requests hang, as with an overloaded server, until resumed."""
        if self._influxd is not None:
            self._influxd.send_signal(signal.SIGSTOP)

    def resume_influxd(self) -> None:
        """Let a paused influxd go on (SIGCONT)."""
        if self._influxd is not None:
            self._influxd.send_signal(signal.SIGCONT)

    def stop_bridge(self) -> None:
        """Stop the bridge: the receiver then sees InfluxDB as unreachable."""
        if self._nginx is not None:
            self._nginx.stop()

    def start_bridge(self) -> None:
        """Start the bridge again on its port."""
        self._start_bridge(initial=False)
