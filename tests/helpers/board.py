"""The board's browser tests: Debian's Chromium flags, the operator token, telemetry frames for a
plotted fault, and a page opened with a token."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, Page

from fleetops.wire import AcceleratorReadings, Telemetry
from tests.helpers.paths import REPO

CHROMIUM = "/usr/bin/chromium"


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


ARTIFACTS = REPO / "artifacts"


OPERATOR = "operator-token-" + "o" * 24


def board_frame(node: str, seq: int, ts: float, temp: float, power: float, clock: float) -> Telemetry:
    return Telemetry(
        v=1,
        node=node,
        ts=ts,
        session=1,
        seq=seq,
        interval_s=10.0,
        accelerators=[
            AcceleratorReadings(
                index=i,
                id=f"GPU-{node}-{i}",
                temperature_celsius=temp if i == 1 else 41.0,
                slowdown_temperature_celsius=87.0,
                power_watts=power if i == 1 else 120.0,
                power_limit_watts=700.0,
                sm_clock_mhz=int(clock) if i == 1 else 1980,
                utilization_percent=97.0,
            )
            for i in range(2)
        ],
    )


async def open_page(browser: Browser, token: str = "", **context: Any) -> Page:
    ctx = await browser.new_context(**context)
    if token:
        await ctx.add_init_script(f"sessionStorage.setItem('fleetops.token', {token!r});")
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" and "403" not in msg.text else None,
    )
    page.errors = errors  # type: ignore[attr-defined]
    return page
