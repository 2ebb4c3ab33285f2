"""The xdist grouping: tests that share an expensive fixture run on one worker, the rest spread freely."""

from __future__ import annotations

from tests.xdist_groups import shared_fixture_groups


def test_tests_sharing_a_fixture_share_a_group_and_the_rest_have_none() -> None:
    groups = shared_fixture_groups({"a": {"pair"}, "b": {"pair"}, "c": set(), "d": {"duo"}})
    assert groups == {"a": "pair", "b": "pair", "d": "duo"}


def test_a_chain_of_shared_fixtures_is_one_group_named_alike_in_any_order() -> None:
    uses = {"t1": {"x", "m"}, "t2": {"m"}, "t3": {"y", "x"}, "t4": {"z"}}
    groups = shared_fixture_groups(uses)
    assert groups == {"t1": "m", "t2": "m", "t3": "m", "t4": "z"}
    assert shared_fixture_groups(dict(reversed(uses.items()))) == groups
