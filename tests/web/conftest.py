"""Coordinators serving the web page over the real local agent pair, and a headless Chromium to drive them.

The browser is Debian's /usr/bin/chromium (scripts/system-deps.sh), driven by Playwright with a fresh
profile; nothing is downloaded. The tests that need it skip, saying why, when it is missing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.local_cluster import LocalCluster
from tests.coordinator.conftest import Coordinator, agents, ensure_up, free_port  # noqa: F401 (agents: a fixture)
from tests.processes import stop_together
from tests.web.pages import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}


class WebCoordinator(Coordinator):
    """A coordinator child process with its web page on a port of its own."""

    def __init__(self, workdir: Path, cluster: LocalCluster, **kw: Any) -> None:
        self.web_port = free_port()
        super().__init__(workdir, cluster, web={"listen": f"127.0.0.1:{self.web_port}", "password": PASSWORD}, **kw)
        self.url = f"http://127.0.0.1:{self.web_port}"


@pytest.fixture(scope="module")
def live(agents: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebCoordinator]:  # noqa: F811
    """The page of a coordinator over the real pair: jobs run and finish."""
    ensure_up(agents)
    c = WebCoordinator(tmp_path_factory.mktemp("live"), agents)
    c.start()
    try:
        c.wait_for_agents(c.client())
        yield c
    finally:
        stop_together([c.child] if c.child is not None else [])


@pytest.fixture(scope="module")
def stuck(agents: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebCoordinator]:  # noqa: F811
    """The page of a coordinator whose agents only post-process: every t2v job stays queued (to cancel it)."""
    c = WebCoordinator(tmp_path_factory.mktemp("stuck"), agents, roles={"a": ["post"], "b": ["post"]})
    c.start()
    try:
        yield c
    finally:
        stop_together([c.child] if c.child is not None else [])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (a fresh profile: Playwright's launch makes a temporary one)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/system-deps.sh does, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the pages' screenshots go: $ARTIFEX_SCREENSHOTS, else a temporary folder (test artifacts)."""
    folder = Path(os.environ.get("ARTIFEX_SCREENSHOTS") or tempfile.mkdtemp(prefix="artifex-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
