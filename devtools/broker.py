"""A private Mosquitto broker on a free loopback port, for the demo and the test suite.

Production brokers are configured from ``packaging/mosquitto``; this one lives in a temporary
directory, listens on 127.0.0.1 only, allows anonymous clients and persists to its own folder.

Mosquitto started as root drops its privileges to the ``mosquitto`` user, which cannot write into
a private temporary directory: it then logs "Error: Permission denied" at every autosave and
persists nothing, so queued sessions vanish on restart. The config therefore names the current user
(``user``), which keeps the broker's identity and makes persistence work under any account.

``tied=True`` (the demo) starts the broker in a session of its own, so that a terminal's Ctrl-C
reaches only the process that owns it and that stops things in order, and with a parent-death signal
(``fleetops.lifeline``), so that it ends when that process ends, even killed; call ``start()`` from
the main thread then, as the signal follows the thread that started the broker. Being the same user,
Mosquitto changes no credentials, which would clear that signal.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from fleetops import lifeline

__all__ = ["BrokerNotFound", "PrivateBroker", "free_port"]


class BrokerNotFound(RuntimeError):
    """The ``mosquitto`` executable is not installed (Debian package ``mosquitto``)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        path = shutil.which(candidate)
        if path:
            return path
    raise BrokerNotFound(
        "mosquitto is not installed: install the Debian package 'mosquitto' (apt-get install mosquitto)"
    )


class PrivateBroker:
    """Start with ``start()`` (or as a context manager); ``url`` gives ``mqtt://127.0.0.1:PORT``.

    ``stop()`` and ``start()`` again keep the same port and persistence directory, so tests can
    take the broker down and bring it back with its queued sessions.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | None = None,
        extra_config: str = "",
        max_queued_messages: int = 1_000_000,
        tied: bool = False,
    ) -> None:
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="fleetops-broker-"))
        self.extra_config = extra_config
        self.max_queued_messages = max_queued_messages
        self.tied = tied
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config_text(self) -> str:
        persist = self.workdir / "data"
        persist.mkdir(parents=True, exist_ok=True)
        return "\n".join(
            [
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                f"user {pwd.getpwuid(os.getuid()).pw_name}",
                "persistence true",
                f"persistence_location {persist}/",
                "autosave_interval 1",
                f"max_queued_messages {self.max_queued_messages}",
                "max_inflight_messages 1000",
                "persistent_client_expiration 1d",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                self.extra_config,
                "",
            ]
        )

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        exe = find_mosquitto()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = self.log_path.open("ab")
        argv = [exe, "-c", str(conf)]
        self._proc = subprocess.Popen(
            lifeline.tied(argv) if self.tied else argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=self.tied,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout_s}s")

    def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
