"""Migration helpers on output recorded on the virtual lab (Xen 4.17.7, Debian 12 dom0,
the harness's test guest): tests/data/migration/."""

from __future__ import annotations

from pathlib import Path

from harness.migration import usage_options
from harness.nbd import free_nbd_indexes

DATA = Path(__file__).parent.parent / "data" / "migration"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_migrate_usage_of_debian_4_17_has_no_suse_knobs() -> None:
    options = usage_options(read("xl-help-migrate-4.17.7.txt"))
    assert options == {"h", "C", "s", "e", "debug", "p", "D"}
    assert not options & {"max_iters", "min_remaining", "abort_if_busy"}


def test_save_usage_offers_checkpoint() -> None:
    assert "c" in usage_options(read("xl-help-save-4.17.7.txt"))


def test_free_nbd_devices_exclude_the_connected_one() -> None:
    free = free_nbd_indexes(read("sys-block-nbd-sizes-nbd0-attached.txt"))
    assert free == set(range(1, 16))
