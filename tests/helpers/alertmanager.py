"""A real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port, configured to
forward to a local receiver."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from devtools.broker import free_port


def alertmanager_config(hook_url: str) -> str:
    return f"""
route:
  receiver: hook
  group_by: [alertname, site, action]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook_url}
        send_resolved: true
"""


class Alertmanager:
    def __init__(self, workdir: Path, hook_url: str) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError("prometheus-alertmanager is not installed (scripts/bootstrap.sh test)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "am.yml"
        config.write_text(alertmanager_config(hook_url))
        check = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = (workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
