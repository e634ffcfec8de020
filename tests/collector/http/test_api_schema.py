"""Property-based tests of the API from its own OpenAPI document (schemathesis): generated valid
and invalid requests to every operation, as an operator, never get a 5xx, and responses to valid
requests match the document."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from collector.config import parse_config
from collector.http.openapi import document
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.api import OPERATOR, TOKENS, seed_tasks
from tests.helpers.collector import eventually

EXAMPLES = 20


def _exercise(base_url: str, doc: dict[str, Any], seen: Counter[int]) -> list[str]:
    """Drive every operation; returns what went wrong (5xx, or a valid request answered off-spec)."""
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_one(operation, mode, base_url, headers, problems, seen)
    return problems


def _run_one(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    problems: list[str],
    seen: Counter[int],
) -> None:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        seen[response.status_code // 100 * 100] += 1
        if response.status_code >= 500:
            problems.append(
                f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:200]}"
            )
            return
        if mode is GenerationMode.POSITIVE and response.status_code < 400:
            try:
                case.validate_response(response)
            except Exception as exc:  # a schema mismatch: report it with the case
                problems.append(f"{case.method} {case.formatted_path}: {str(exc)[:300]}")

    try:
        check()
    except Unsatisfiable:
        # an operation with nothing to get wrong (no parameters, no body) has no invalid requests
        assert mode is GenerationMode.NEGATIVE, operation.label


async def test_generated_requests_never_get_a_5xx(own_broker: PrivateBroker, tmp_path: Path) -> None:
    config = parse_config(
        {
            "mqtt": {"url": own_broker.url, "client_id": f"schema-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "auth": {"tokens": TOKENS},
        }
    )
    collector = Collector(config)
    await collector.start()
    try:
        await eventually(lambda: collector.ingest.connected)
        for i in range(1, 4):
            seed_tasks(collector, fault=f"xid:{118 + i}", node=f"gpu-r01-n0{i}")
        runner = collector._runner
        assert runner is not None
        seen: Counter[int] = Counter()
        problems = await asyncio.to_thread(_exercise, collector.api_url, document(runner.app), seen)
    finally:
        await collector.stop()
    assert problems == []
    assert seen[200] >= 50  # valid requests were served...
    assert seen[400] >= 50  # ...and invalid ones refused with a reason, not a crash
    assert seen[500] == 0
