"""axis-exporter: receiver for Axis people counters' Generic Data Push."""

__version__ = "0.1.0"
