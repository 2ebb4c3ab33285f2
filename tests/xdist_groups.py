"""Which tests must share a pytest-xdist worker: those that use the same session- or module-scoped fixture.

A worker builds its own copy of every such fixture it needs, and most of them start agents (seconds of CPU
each). `--dist loadgroup` keeps each group on one worker, so a pair of agents is started once per run.
"""

from __future__ import annotations

from collections.abc import Mapping


def shared_fixture_groups(uses: Mapping[str, set[str]]) -> dict[str, str]:
    """Test id -> group name; tests linked through a chain of shared fixtures land in one group.

    `uses` maps each test id to the keys of the shared fixtures it uses; a test using none is in no group.
    The group is named after its alphabetically first fixture key, so the name does not depend on test order.
    """
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for keys in uses.values():
        first, *rest = sorted(keys) if keys else [""]
        for key in rest:
            # Union by the smaller name: every group's root is its alphabetically first key.
            a, b = root(first), root(key)
            parent[max(a, b)] = min(a, b)
    return {test: root(min(keys)) for test, keys in uses.items() if keys}
