"""A test's measured figures: times, rates, losses."""

from __future__ import annotations

import logging

import pytest

log = logging.getLogger(__name__)


class Figures:
    """Logged as they come, attached to the test's report as one table (by the
    plugin), and written to junit.xml as properties."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.values: dict[str, tuple[float, str]] = {}

    def add(self, name: str, value: float, unit: str) -> None:
        """A figure measured again under the same name (a second migration) is numbered:
        "name (2)"."""
        if name in self.values:
            name = f"{name} ({sum(1 for n in self.values if n.startswith(name)) + 1})"
        log.info("figure %s: %s %s", name, f"{value:.3f}".rstrip("0").rstrip("."), unit)
        self.values[name] = (value, unit)
        self.item.user_properties.append((name, f"{value:.3f} {unit}"))

    def render(self) -> str:
        width = max(map(len, self.values), default=0)
        return "\n".join(f"{name:<{width}}  {value:.3f} {unit}"
                         for name, (value, unit) in self.values.items()) + "\n"
