"""fleetops agent: reads a node's accelerators and host, streams them to the collector over MQTT."""

from fleetops import __version__

__all__ = ["__version__"]
