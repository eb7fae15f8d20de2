"""The plugin's order of a session's tests: `before_build` tests first,
`leaves_host_off` tests last."""

from __future__ import annotations

from typing import Any, cast

import pytest

from harness.plugin import pytest_collection_modifyitems


class Item:
    def __init__(self, name: str, *markers: str) -> None:
        self.name = name
        self.markers = markers

    def get_closest_marker(self, name: str) -> Any:
        return getattr(pytest.mark, name) if name in self.markers else None


def test_before_build_tests_come_first_the_rest_keep_their_order() -> None:
    items = [Item("boot"), Item("guest"), Item("without-xen", "before_build"),
             Item("migrate"), Item("plain-host", "before_build")]
    pytest_collection_modifyitems(cast(list[pytest.Item], items))
    assert [item.name for item in items] == ["without-xen", "plain-host", "boot", "guest",
                                             "migrate"]


def test_tests_that_leave_a_host_off_come_last() -> None:
    items = [Item("boot"), Item("destination-off-pvh", "leaves_host_off"), Item("migrate"),
             Item("destination-off-pv", "leaves_host_off"), Item("plain-host", "before_build"),
             Item("support")]
    pytest_collection_modifyitems(cast(list[pytest.Item], items))
    assert [item.name for item in items] == ["plain-host", "boot", "migrate", "support",
                                             "destination-off-pvh", "destination-off-pv"]
