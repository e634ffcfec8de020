"""fleetops agent: reads a node's accelerators and host, streams them to the collector over MQTT."""

__version__ = "0.1.0"
