"""The compact trend: rows per frame and accelerator, absent values left out, the window kept, a new
accelerator widening every row, a replaced part forgotten."""

from __future__ import annotations

from collector.fleet.history import TREND_FIELDS, Trend
from fleetops.wire import AcceleratorReadings


def gpu(index: int, temp: float | None = 50.0, **fields: object) -> AcceleratorReadings:
    return AcceleratorReadings(index=index, id=f"GPU-{index}", temperature_celsius=temp, **fields)  # type: ignore[arg-type]


def test_rows_keep_what_each_frame_carried() -> None:
    trend = Trend(600.0)
    trend.append(10.0, [gpu(0, 40.0, power_watts=300.5, clock_event_reasons=0x40), gpu(1, None)])
    trend.append(20.0, [gpu(0, 41.5)])  # GPU 1 absent from this frame
    assert trend.rows(0) == [
        {
            "ts": 10.0,
            "index": 0,
            "temperature_celsius": 40.0,
            "power_watts": 300.5,
            "clock_event_reasons": 64,
        },
        {"ts": 20.0, "index": 0, "temperature_celsius": 41.5},
    ]
    assert trend.rows(1) == []  # nothing but absent readings: no rows
    assert trend.rows(0, since=15.0) == [{"ts": 20.0, "index": 0, "temperature_celsius": 41.5}]
    assert trend.rows(0, limit=1) == [{"ts": 20.0, "index": 0, "temperature_celsius": 41.5}]
    assert trend.rows(7) == []


def test_the_window_bounds_the_rows() -> None:
    trend = Trend(100.0)
    for i in range(50):
        trend.append(float(i * 10), [gpu(0, float(i))])
    assert len(trend) == 11  # 390..490 s
    rows = trend.rows(0)
    assert rows[0]["ts"] == 390.0
    assert rows[-1]["temperature_celsius"] == 49.0
    assert trend.times[0] == 390.0


def test_a_new_accelerator_widens_every_row() -> None:
    trend = Trend(600.0)
    trend.append(10.0, [gpu(0, 40.0)])
    trend.append(20.0, [gpu(0, 41.0), gpu(3, 60.0)])
    trend.append(30.0, [gpu(3, 61.0), gpu(0, 42.0)])  # another order
    assert trend.indices() == [0, 3]
    assert [r["temperature_celsius"] for r in trend.rows(0)] == [40.0, 41.0, 42.0]
    assert [r["temperature_celsius"] for r in trend.rows(3)] == [60.0, 61.0]


def test_a_replaced_part_starts_afresh() -> None:
    trend = Trend(600.0)
    trend.append(10.0, [gpu(0, 40.0), gpu(1, 45.0)])
    trend.forget(0)
    trend.append(20.0, [gpu(0, 30.0), gpu(1, 46.0)])
    assert [r["temperature_celsius"] for r in trend.rows(0)] == [30.0]
    assert [r["temperature_celsius"] for r in trend.rows(1)] == [45.0, 46.0]


def test_four_bytes_per_value() -> None:
    trend = Trend(86400.0)
    for i in range(100):
        trend.append(float(i), [gpu(k) for k in range(8)])
    assert trend._rows.itemsize == 4
    assert len(trend._rows) == 100 * 8 * len(TREND_FIELDS)
