"""The board in a real headless Chromium (Debian's, driven by Playwright): fleet view, task filters,
acknowledging as an operator (a viewer is refused), the task page's evidence plots on a phone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from playwright.async_api import Browser, expect

from collector.config import parse_config
from collector.http.auth import hash_token
from collector.service import Collector
from collector.store import TaskQuery
from devtools.broker import PrivateBroker
from fleetops.wire import (
    DimmReading,
    HostRasReadings,
    HostReadings,
    HwmonSensor,
    MountReading,
    Nic,
    NicReadings,
)
from tests.helpers.board import ARTIFACTS, OPERATOR, board_frame, open_page
from tests.helpers.collector import SITE, Publisher, birth, event, eventually, status

VIEWER = "viewer-token-" + "v" * 24
HOT = "gpu-r02-n02"
LOST = "gpu-r01-n05"
DIMM = "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"
#: corrected errors on the hot node: a DIMM logging twice (40 and 12 folded), one AER on GPU 1
HOT_HARDWARE: list[tuple[str, dict[str, Any], int, int | None]] = [
    ("memory_error", {"dimm": DIMM, "type": "corrected", "count": 40}, 40, None),
    ("pcie_aer", {"severity": "corrected", "errors": "RxErr", "source": "0000:2a:00.0"}, 1, 1),
    ("memory_error", {"dimm": DIMM, "type": "corrected", "count": 12}, 12, None),
]

#: the lost node's RDMA ports (one down, below its rated rate) and host RAS readings from sysfs
LOST_NICS = [
    Nic(
        device="mlx5_0",
        port=1,
        link_layer="InfiniBand",
        netdev="ibp24s0",
        pci_bus_id="0000:18:00.1",
        numa_node=0,
        rated_gbps=400.0,
        near_gpus=["0000:18:00.0"],
    ),
    Nic(
        device="mlx5_1",
        port=1,
        link_layer="InfiniBand",
        netdev="ibp25s0",
        pci_bus_id="0000:19:00.1",
        numa_node=0,
        rated_gbps=400.0,
        near_gpus=["0000:19:00.0"],
    ),
]
LOST_NIC_READINGS = [
    NicReadings(
        device="mlx5_0",
        port=1,
        state="ACTIVE",
        phys_state="LinkUp",
        rate_gbps=400.0,
        link_downed=0,
        carrier_changes=2,
        symbol_error=0,
        port_rcv_errors=0,
    ),
    NicReadings(
        device="mlx5_1",
        port=1,
        state="DOWN",
        phys_state="Polling",
        rate_gbps=100.0,
        link_downed=14,
        carrier_changes=31,
        symbol_error=9120,
        port_rcv_errors=377,
    ),
]
LOST_RAS = HostRasReadings(
    dimms=[
        DimmReading(mc=0, entry="dimm0", label="CPU0_DIMM_A1", corrected_total=0, uncorrected_total=0),
        DimmReading(
            mc=0,
            entry="dimm1",
            label="CPU0_DIMM_B1",
            location="channel 1 slot 0",
            corrected_total=52,
            uncorrected_total=0,
        ),
    ],
    hwmon=[
        HwmonSensor(
            chip="pmbus",
            device="i2c-7-58",
            sensor="in1",
            label="vin",
            psu=1,
            alarm=True,
            alarms=["in1_lcrit_alarm"],
        )
    ],
    mounts=[
        MountReading(mount="/", device="nvme0n1p2", fs="ext4"),
        MountReading(mount="/scratch", device="md0", fs="xfs", readonly=True),
    ],
)


@pytest.fixture
async def collector(own_broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    config = parse_config(
        {
            "mqtt": {"url": own_broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            # the node page shows LOST's read-only /scratch; its own task would crowd the one under test
            "rules": {"disabled": ["mount_readonly"]},
            "auth": {
                "tokens": [
                    {"name": "alice", "role": "operator", "sha256": hash_token(OPERATOR)},
                    {"name": "victor", "role": "viewer", "sha256": hash_token(VIEWER)},
                ]
            },
        }
    )
    c = Collector(config)
    await c.start()
    await eventually(lambda: c.ingest.connected)
    publisher = Publisher(own_broker.port)
    try:
        now = time.time()
        for node, rack in ((HOT, "r02"), (LOST, "r01"), ("gpu-r01-n01", "r01")):
            born = birth(node, 1, rack=rack, ts=now - 400)
            if node == LOST:
                born = msgspec.structs.replace(born, nics=LOST_NICS)
            publisher.send(born, retain=True)
            publisher.send(status(node, "online", 1, ts=now - 400), retain=True)
        for seq in range(30):  # five minutes of frames: GPU 1 heats up, clocks down
            ts = now - 300 + seq * 10
            for node in (HOT, LOST, "gpu-r01-n01"):
                heat = seq * 1.6 if node == HOT else 0.0
                frame = board_frame(node, seq, ts, 45.0 + heat, 300.0 + heat * 5, 1980.0 - heat * 12)
                if node == LOST and seq == 29:
                    host = HostReadings(0.0, 0.1, 0.1, 0.1, 2**40, 2**39, ras=LOST_RAS)
                    frame = msgspec.structs.replace(frame, host=host, nics=LOST_NIC_READINGS)
                publisher.send(frame, qos=0)
        lost = msgspec.structs.replace(event(LOST, "xid", data={"xid": 79}, index=1), ts=now - 15)
        publisher.send(lost)
        for seq, (kind, data, count, index) in enumerate(HOT_HARDWARE, start=1):
            corrected = event(HOT, kind, data=data, index=index, seq=seq)
            publisher.send(
                msgspec.structs.replace(corrected, ts=now - 100 + seq, severity="info", count=count)
            )
        await eventually(lambda: c.store.list_tasks(TaskQuery(node=LOST))[0])
    finally:
        publisher.close()
    yield c
    await c.stop()


async def _api(collector: Collector, path: str) -> Any:
    headers = {"Authorization": f"Bearer {VIEWER}"}
    async with aiohttp.ClientSession() as s, s.get(f"{collector.api_url}{path}", headers=headers) as r:
        return await r.json()


async def test_fleet_view_shows_sites_racks_nodes_and_health_in_words(
    collector: Collector, browser: Browser
) -> None:
    page = await open_page(browser, VIEWER, viewport={"width": 1280, "height": 900})
    await page.goto(f"{collector.api_url}/board/")
    site = page.locator("section.site[data-site='demo']")
    await expect(site).to_be_visible()
    await expect(site.locator(".rack")).to_have_count(2)
    lost = page.locator(f"li.node[data-node='{LOST}']")
    await expect(lost).to_have_attribute("data-health", "critical")
    await expect(lost.locator(".badge").first).to_have_text("‼critical")  # icon and word, not colour alone
    await expect(lost.locator(".accel[data-health='critical']")).to_have_count(1)
    await expect(page.locator(f"li.node[data-node='{HOT}'] .badge").first).to_have_text("✓ok")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "board-fleet.png"), full_page=True)
    await lost.locator("a").click()
    await expect(page.locator("h1")).to_have_text(LOST)
    await expect(page.locator("table.readings tbody tr")).to_have_count(2)
    await expect(page.locator("text=XID 79").first).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_filter_tasks_then_acknowledge_as_operator_while_a_viewer_is_refused(
    collector: Collector, browser: Browser
) -> None:
    (task,) = collector.store.list_tasks(TaskQuery(node=LOST))[0]
    viewer = await open_page(browser, VIEWER)
    await viewer.goto(f"{collector.api_url}/board/#/tasks")
    await expect(viewer.locator("li.task")).to_have_count(1)
    await viewer.select_option("#f-severity", "warning")
    await expect(viewer.locator("#task-count")).to_have_text("0 tasks")
    await viewer.select_option("#f-severity", "critical")
    await viewer.select_option("#f-action", task.action)
    await expect(viewer.locator(f"li.task[data-task='{task.id}']")).to_be_visible()
    assert "severity=critical" in viewer.url
    await viewer.locator(f"li.task[data-task='{task.id}'] a.title").click()
    await expect(viewer.locator("#read-only")).to_be_visible()
    ack = viewer.locator("button[data-verb='acknowledge']")
    await expect(ack).to_have_attribute("aria-disabled", "true")
    await ack.click(force=True)  # the page says no; the API is what refuses
    await expect(viewer.locator("#status")).to_contain_text("403")
    await expect(viewer.locator("#task-state .badge")).to_have_attribute("data-state", "open")
    assert (await _api(collector, f"/api/v1/tasks/{task.id}"))["state"] == "open"

    operator = await open_page(browser, OPERATOR)
    await operator.goto(f"{collector.api_url}/board/#/tasks/{task.id}")
    await expect(operator.locator("#signin")).to_have_text("alice · operator")
    await operator.fill("#act-note", "on it, draining the node")
    await operator.locator("button[data-verb='acknowledge']").click()
    await expect(operator.locator("#task-state .badge")).to_have_attribute("data-state", "acknowledged")
    await expect(operator.locator(".history")).to_contain_text("alice")
    detail = await _api(collector, f"/api/v1/tasks/{task.id}")
    assert detail["state"] == "acknowledged"
    assert operator.errors == []  # type: ignore[attr-defined]


async def test_the_task_list_on_a_phone_leads_each_task_with_its_title(
    collector: Collector, browser: Browser
) -> None:
    (task,) = collector.store.list_tasks(TaskQuery(node=LOST))[0]
    page = await open_page(
        browser, OPERATOR, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    await page.goto(f"{collector.api_url}/board/#/tasks")
    item = page.locator(f"li.task[data-task='{task.id}']")
    title = item.locator("a.title")
    await expect(title).to_have_text(task.summary)
    assert task.summary == "GPU 1 fell off the bus (XID 79): reboot the node"
    await expect(item).to_contain_text(f"#{task.id} {task.action}")
    await expect(item).not_to_contain_text("ROBUST_CHANNEL")  # the detail is on the task page
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    box = await title.bounding_box()
    assert box is not None
    assert box["width"] <= 390 - 2 * 12  # it wraps within the card
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "board-tasks-phone.png"), full_page=True)
    await title.click()
    await expect(page.locator("#task-summary")).to_have_text(task.summary)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_task_page_on_a_phone_plots_the_readings_around_the_fault(
    collector: Collector, browser: Browser
) -> None:
    (task,) = collector.store.list_tasks(TaskQuery(node=LOST))[0]
    page = await open_page(
        browser,
        OPERATOR,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    await page.goto(f"{collector.api_url}/board/#/tasks/{task.id}")
    await expect(page.locator("h1")).to_contain_text(f"Task #{task.id}")
    await expect(page.locator("#task-summary")).to_have_text(
        "GPU 1 fell off the bus (XID 79): reboot the node"
    )
    # below the title, the findings with all they said
    await expect(page.locator("ol.findings li")).to_have_count(1)
    await expect(page.locator("ol.findings")).to_contain_text(
        "XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    )
    plots = page.locator("figure.plot")
    await expect(plots.first).to_be_visible()
    temperature = page.locator("figure.plot[data-key='temperature_celsius'] svg.chart")
    await expect(temperature).to_have_count(1)
    points = int(await temperature.get_attribute("data-points") or 0)
    assert points >= 10
    assert await temperature.locator("circle.pt").count() == points
    path = await temperature.locator("path.line").get_attribute("d")
    assert path is not None
    assert path.count("L") >= points - 1
    await expect(temperature.locator("g.event")).to_have_count(1)  # the XID, marked on the plot
    await expect(temperature.locator("line.limit")).to_have_count(1)  # the slowdown threshold
    for key in ("power_watts", "sm_clock_mhz"):
        await expect(page.locator(f"figure.plot[data-key='{key}'] circle.pt").first).to_be_attached()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling on a phone
    button = page.locator("button[data-verb='acknowledge']")
    box = await button.bounding_box()
    assert box is not None
    assert box["height"] >= 44
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "board-task-phone.png"), full_page=True)
    await page.locator("figure.plot").first.screenshot(path=str(ARTIFACTS / "board-plot-phone.png"))
    # keyboard only: focus reaches the acknowledge button and Enter acknowledges
    await button.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#task-state .badge")).to_have_attribute("data-state", "acknowledged")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_node_page_folds_the_kernels_hardware_faults_by_unit(
    collector: Collector, browser: Browser
) -> None:
    path = f"/api/v1/sites/{SITE}/nodes/{HOT}/events"
    for _ in range(100):
        if len((await _api(collector, path))["hardware"]) == 2:
            break
        await asyncio.sleep(0.05)
    page = await open_page(browser, VIEWER)
    await page.goto(f"{collector.api_url}/board/#/sites/{SITE}/nodes/{HOT}")
    await expect(page.locator("h1")).to_have_text(HOT)
    rows = page.locator("table.hardware tbody tr")
    await expect(rows).to_have_count(2)  # two events of one DIMM are one row
    dimm = page.locator("table.hardware tr[data-kind='memory_error']")
    await expect(dimm.locator("th")).to_have_text(f"DIMM {DIMM}")
    await expect(dimm.locator("td").nth(1)).to_have_text("52")  # 40 + 12 corrected errors
    await expect(page.locator("table.hardware tr[data-kind='pcie_aer'] th")).to_have_text("GPU 1")
    # a node without any shows it says so
    await page.goto(f"{collector.api_url}/board/#/sites/{SITE}/nodes/gpu-r01-n01")
    await expect(page.locator("p.hardware-none")).to_contain_text("None in the last 7 days")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_node_page_shows_its_network_ports_and_host_hardware(
    collector: Collector, browser: Browser
) -> None:
    path = f"/api/v1/sites/{SITE}/nodes/{LOST}"
    for _ in range(100):
        if (await _api(collector, path))["readings"]["nics"]:
            break
        await asyncio.sleep(0.05)
    page = await open_page(browser, VIEWER)
    await page.goto(f"{collector.api_url}/board/#{path.removeprefix('/api/v1')}")
    await expect(page.locator("h1")).to_have_text(LOST)
    ports = page.locator("table.nics tbody tr")
    await expect(ports).to_have_count(2)
    good, bad = page.locator("tr[data-port='mlx5_0/1']"), page.locator("tr[data-port='mlx5_1/1']")
    await expect(good.locator("td").nth(1)).to_have_text("ACTIVE / LinkUp")
    await expect(good.locator("td").last).to_have_text("GPU 0")  # sysfs and NVML addresses matched
    await expect(bad.locator("td.h-down")).to_have_text("DOWN / Polling")
    await expect(bad.locator("td.h-warning")).to_have_text("100 of 400")
    await expect(bad.locator("td").nth(5)).to_have_text("9120")
    await expect(bad.locator("td").last).to_have_text("GPU 1")
    ras = page.locator("table.ras tbody tr")
    await expect(ras).to_have_count(3)  # the DIMM with errors, the alarm, the read-only mount
    await expect(page.locator("table.ras tr[data-kind='dimm'] th")).to_have_text(
        "DIMM CPU0_DIMM_B1 (channel 1 slot 0)"
    )
    await expect(page.locator("table.ras tr[data-kind='hwmon'] td")).to_have_text("alarm: in1_lcrit_alarm")
    await expect(page.locator("table.ras tr[data-kind='mount'] td.h-critical")).to_contain_text("read-only")
    await expect(page.locator("text=Watching 2 DIMMs")).to_be_visible()
    # a node without ports or RAS readings says so
    await page.goto(f"{collector.api_url}/board/#/sites/{SITE}/nodes/gpu-r01-n01")
    await expect(page.locator("p.nics-none")).to_be_visible()
    await expect(page.locator("p.ras-none")).to_contain_text("not running")
    assert page.errors == []  # type: ignore[attr-defined]
