"""Helpers for the TLS tests: a fleet CA made by packaging/pki/fleetops-pki, and a Mosquitto started
from the shipped production configuration (packaging/mosquitto-tls) with only its paths and port
changed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.broker import find_mosquitto, free_port
from tests.helpers.paths import REPO

PKI_SCRIPT = REPO / "packaging" / "pki" / "fleetops-pki"
TLS_CONF = REPO / "packaging" / "mosquitto-tls" / "fleetops-tls.conf"
TLS_ACL = REPO / "packaging" / "mosquitto-tls" / "fleetops-acl"
RELIABILITY_CONF = REPO / "packaging" / "mosquitto" / "fleetops-reliability.conf"
SITE = "demo"


class Pki:
    """A fleet CA in ``root`` and the certificates the tests need, issued by the shipped script."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [str(PKI_SCRIPT), *args], capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def init(self) -> Pki:
        self.run("init", str(self.root))
        return self

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def node(self, node: str, site: str = SITE) -> tuple[Path, Path]:
        folder = self.root / "nodes" / site / node
        if not (folder / "node.pem").exists():
            self.run("node", str(self.root), site, node)
        return folder / "node.pem", folder / "node.key"

    def collector(self, name: str = "fleetops-collector") -> tuple[Path, Path]:
        """The collector's ingest certificate (``fleetops-pki collector`` issues it with the
        operations one)."""
        cert = self.root / "collector" / f"{name}.pem"
        if not cert.exists():
            self.run("collector", str(self.root), name)
        return cert, cert.with_suffix(".key")

    def collector_ops(self, name: str = "fleetops-collector") -> tuple[Path, Path]:
        """The certificate of the collector's operations connection (CN ``<name>-ops``)."""
        cert = self.root / "collector" / f"{name}-ops.pem"
        if not cert.exists():
            self.run("collector", str(self.root), name)
        return cert, cert.with_suffix(".key")

    def server(self, name: str, *sans: str) -> tuple[Path, Path]:
        cert = self.root / "servers" / f"{name}.pem"
        if not cert.exists():
            self.run("server", str(self.root), name, *sans)
        return cert, cert.with_suffix(".key")


def production_config(pki: Pki, workdir: Path, port: int) -> str:
    """The shipped broker configuration with its paths pointed into ``workdir`` and ``port``."""
    cert, key = pki.server("broker", "localhost", "127.0.0.1")
    acl = workdir / "fleetops-acl"
    shutil.copyfile(TLS_ACL, acl)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    # As installed: both files in conf.d, TLS and ACLs in one, persistence and queues in the other.
    text = TLS_CONF.read_text() + "\n" + RELIABILITY_CONF.read_text()
    replacements = {
        r"^listener 8883$": f"listener {port} 127.0.0.1",
        r"/etc/mosquitto/certs/fleetops-ca\.pem": str(pki.ca),
        r"/etc/mosquitto/certs/broker\.pem": str(cert),
        r"/etc/mosquitto/certs/broker\.key": str(key),
        r"^acl_file /etc/mosquitto/fleetops-acl$": f"acl_file {acl}",
        r"/var/lib/mosquitto/": f"{data}/",
    }
    for pattern, value in replacements.items():
        text, count = re.subn(pattern, value, text, flags=re.M)
        assert count == 1, f"{pattern} not found once in {TLS_CONF} + {RELIABILITY_CONF}"
    extra = ["log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
    if os.geteuid() == 0:
        extra.append("user root")  # else mosquitto drops to 'mosquitto', which cannot read tmp_path
    return text + "\n" + "\n".join(extra) + "\n"


class TlsBroker:
    def __init__(self, pki: Pki, workdir: Path) -> None:
        self.pki = pki
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}"

    def start(self) -> TlsBroker:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(production_config(self.pki, self.workdir, self.port))
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [find_mosquitto(), "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, self.log_path.read_text()[-2000:]
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> TlsBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Client:
    """A synchronous MQTT v5 client over TLS for the tests: connect, publish with the PUBACK reason
    code, subscribe and collect messages."""

    def __init__(
        self,
        broker: TlsBroker,
        cert: Path | None,
        key: Path | None,
        *,
        ca: Path | None = None,
        tls: bool = True,
        client_id: str = "",
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            protocol=MQTTProtocolVersion.MQTTv5,
            client_id=client_id,
        )
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        if tls:
            self.client.tls_set(
                ca_certs=str(ca or broker.pki.ca),
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.broker = broker
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.connect_reason: str = ""
        self.session_present = False
        self.acks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.connect_reason = str(reason)
        self.session_present = bool(flags.session_present)
        if not reason.is_failure:
            self.connected.set()
        else:
            self.closed.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.closed.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._acked:
            self.acks[mid] = int(reason.value)
            self._acked.notify_all()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload)))

    def connect(
        self, timeout_s: float = 10.0, *, clean_start: bool = True, session_expiry_s: int = 0
    ) -> bool:
        """True once the broker accepted the connection; False when it refused or hung up. A
        ``session_expiry_s`` keeps the session (and its queue) on the broker after a disconnect."""
        properties = None
        if session_expiry_s:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry_s
        try:
            self.client.connect(
                "localhost", self.broker.port, keepalive=30, clean_start=clean_start, properties=properties
            )
        except (OSError, ssl.SSLError):
            return False
        # paho's connect() opens a wake-up socket pair and loop_start() opens another without
        # closing the first (paho-mqtt 2.1): close it here, or it leaks (a ResourceWarning).
        self.client._reset_sockets(sockpair_only=True)
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.closed.is_set():
                return False
            time.sleep(0.02)
        return False

    def publish(self, topic: str, payload: bytes = b"{}", timeout_s: float = 10.0) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 success, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.acks, timeout_s), "no PUBACK"
            return self.acks[info.mid]

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # the wake-up pair too, not only at garbage collection


def wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")
