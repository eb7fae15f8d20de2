"""The leak check's reading of a host's state, on snapshots taken on a real virtual
host (the SNAPSHOT script run by hand there: clean, and with a leaked domain and vif)."""

from __future__ import annotations

from pathlib import Path

from harness.leaks import HostState, describe

DATA = Path(__file__).parent.parent / "data" / "network"


def state(name: str) -> HostState:
    return HostState.parse((DATA / name).read_text())


def test_a_clean_host() -> None:
    clean = state("leak-snapshot-clean.txt")
    assert clean.sections["domains"] == frozenset()
    assert clean.sections["xenstore"] == {"/local/domain/0"}
    # libxl keeps its domid history on purpose: not a leak
    assert "/var/run/xen/domid-history" not in clean.sections["files"]
    assert "/tmp/.X11-unix" in clean.sections["files"]
    assert clean.new_since(clean) == {}


def test_a_leaked_domain_and_vif_are_named() -> None:
    clean, leaky = state("leak-snapshot-clean.txt"), state("leak-snapshot-leaked.txt")
    new = leaky.new_since(clean)
    assert new["domains"] == ["xenhil-leaked"]
    assert "vif999.9" in new["network devices"]
    assert any(path.startswith("/local/domain/") for path in new["xenstore"])
    text = describe("vlab1", new)
    assert text.startswith("vlab1: domains: xenhil-leaked; ")
    # what went away is no leak
    assert clean.new_since(leaky) == {}
