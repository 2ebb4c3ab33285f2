"""Session fixtures shared by the whole suite: the tiny Wan2.2 checkpoints, built once, offline.

Also how the suite runs fast on two cores (README, under `scripts/test.sh`): tests that share a session- or
module-scoped fixture are kept on one pytest-xdist worker (`--dist loadgroup`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.processes import ask_all_to_stop
from tests.xdist_groups import shared_fixture_groups

# Nothing in the tests may reach a hub: a download attempt must fail at once, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Model folder names under `models_root`, by tiny checkpoint variant.
TINY_MODELS = {
    "t2v": "wan2.2-tiny-t2v",
    "t2v-a14b": "wan2.2-tiny-t2v-a14b",
    "i2v-a14b": "wan2.2-tiny-i2v-a14b",
    "ti2v": "wan2.2-tiny-ti2v",
}


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root holding every tiny checkpoint variant (read-only by convention: copy before changing)."""
    import torch

    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

    # Two shared cores: more torch threads only contend.
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    for variant, name in TINY_MODELS.items():
        ensure_tiny_checkpoint(root, name, variant=variant)  # type: ignore[arg-type]
    return root


def _shared_fixture_keys(item: pytest.Item) -> set[str]:
    """The session- and module-scoped fixtures `item` uses, except this file's (every worker builds those)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    here = Path(__file__).parent
    keys = set()
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name)
        if not defs:
            continue
        fixture = defs[-1]  # the definition that applies to this item (the closest override)
        if fixture.scope not in ("session", "module") or not fixture.baseid:
            continue
        if Path(item.config.rootpath, fixture.baseid) == here:
            continue
        # No "::" or "@" in a group name: it becomes part of the test's id.
        keys.add(f"{fixture.baseid.replace('::', '/')}/{name}")
    return keys


def _join_group(item: pytest.Item, group: str) -> None:
    """`--dist loadgroup` schedules by a "@group" suffix on the test's id.

    pytest-xdist 3.8 writes that suffix to `item._nodeid`, which pytest 9.2 no longer reads (pytest-xdist
    issue 1386: the xdist_group mark is silently ignored), so it is written here where this pytest keeps the id.
    """
    nodeid = f"{item.nodeid}@{group}"
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2
    except ImportError:
        item._nodeid = nodeid  # type: ignore[attr-defined]
    else:
        item._id = NodeId.parse(nodeid)  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not getattr(config.option, "loadgroup", False):  # set in pytest-xdist workers under --dist loadgroup
        return
    groups = shared_fixture_groups({item.nodeid: _shared_fixture_keys(item) for item in items})
    for item in items:
        if item.nodeid in groups:
            _join_group(item, groups[item.nodeid])


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist sends the report to the controller
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # xdist sends reports as UTF-8; a captured log line naming a file whose name is not UTF-8 (the watcher's
    # tests make such names on purpose) holds surrogates, and sending it would crash the worker.
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None:
        # The last test: every session fixture is torn down next, one after another. Asking all their agents
        # to stop now lets them stop in parallel (a worker held half a dozen pairs: 25 s, one by one).
        ask_all_to_stop()
