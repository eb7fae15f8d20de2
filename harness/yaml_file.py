"""Reading the harness's own YAML files (lab files, the known-issues file): safe
loading, a key written twice is an error rather than silently the last one, and dates
are left as text for the reader to check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key written twice in one mapping: YAML keeps the last one
    silently, so a second `port:` of a host would win unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` followed by overrides is how merges are meant
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_lines:
                    raise _DuplicateKey(key, line, first_lines[key])
                first_lines[key] = line
            except TypeError:
                break  # an unhashable key: SafeLoader reports it
        return super().construct_mapping(node, deep=deep)


# Dates stay text, read by the field that expects one: SafeLoader's own date raises a
# bare ValueError for 2026-13-01, which could not name the field.
def _timestamp_as_text(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_yaml(path: Path) -> Any:
    """The document in `path`; invalid YAML or a duplicate key is a ConfigError naming
    the file (and the line of the duplicate)."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as duplicate:
        raise ConfigError(f"{path}: line {duplicate.line}: duplicate key {duplicate.key!r} "
                          f"(first on line {duplicate.first_line}); YAML would keep only "
                          "the last") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
