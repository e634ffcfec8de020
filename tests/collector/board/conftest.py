"""Fixtures of the board tests: Debian's Chromium, headless."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.helpers.board import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless."""
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        await b.close()
