"""fleetops: what the agent and the collector share — the wire contract, configuration loading,
logging, secret-file checks and NVIDIA's XID catalog. Third parties import ``fleetops.wire`` to write
a consumer of the MQTT stream."""

__version__ = "0.1.0"
