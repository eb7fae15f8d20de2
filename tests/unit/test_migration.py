"""Migration helpers on output recorded on the virtual lab (Xen 4.17.7, Debian 12 dom0,
the harness's test guest): tests/data/migration/."""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.migration import migrate_command
from harness.migration_checks import GuestState, restart_signs
from harness.migration_hosts import can_log_dirty, usage_options
from harness.migration_output import parse_migrate_output, parse_ping_probe
from harness.nbd import free_nbd_indexes
from harness.xl import parse_xl_info

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


def test_probe_of_a_guest_that_never_stopped() -> None:
    """ping -D -O -i 0.1 from dom0 during a local migration that failed at once (the
    guest ran throughout): ping's own summary counts, and the longest silence is TCG
    scheduling noise (the probe's floor on this lab), not a pause."""
    probe = parse_ping_probe(read("ping-probe-4.17.7-failed-local-migration.txt"))
    assert (probe.sent, probe.received, probe.lost) == (300, 300, 0)
    assert 1.2 < probe.longest_gap < 1.3
    assert probe.last_reply == 1795656618.712682


def test_probe_cut_off_without_summary_counts_its_lines() -> None:
    lines = read("ping-probe-4.17.7-failed-local-migration.txt").splitlines()[:11]
    probe = parse_ping_probe("\n".join(lines))
    assert (probe.sent, probe.received) == (10, 10)


def test_failed_migration_without_shadow_paging() -> None:
    """Debian's 4.17.7 (no CONFIG_SHADOW_PAGING): xl migrate fails enabling log-dirty."""
    output = parse_migrate_output(read("xl-vvv-migrate-localhost-4.17.7-no-shadow-fails.txt"))
    assert not output.succeeded
    assert output.first_error == ("xc: error: Failed to enable logdirty: 95,22,0 "
                                  "(22 = Invalid argument): Internal error")


def test_debian_4_17_7_tracks_dirty_pages_of_pvh_guests_only() -> None:
    """virt_caps of 4.17.7 on a virtual host with NPT (HAP), and on one without: no
    shadow paging, so PVH guests migrate only with HAP."""
    with_hap = "pv hvm hap gnttab-v1 gnttab-v2"
    assert not can_log_dirty("pv", with_hap)
    assert can_log_dirty("pvh", with_hap)
    info = parse_xl_info((DATA.parent / "xl" / "xl-info-4.17.7-vlab.txt").read_text())
    assert not can_log_dirty("pvh", info["virt_caps"])


def test_guest_state_parsed_from_the_guest() -> None:
    state = GuestState.parse(read("guest-state.txt"))
    assert state == GuestState(267, 381.0, "3fc0ffa9-bfc0-4fee-b9bd-3fe434d8c3c2")


def test_a_rebooted_guest_shows_every_sign() -> None:
    """The same guest before and after a sysrq reboot (Xen restarted the domain)."""
    before = GuestState.parse(read("guest-state.txt"))
    after = GuestState.parse(read("guest-state-after-reboot.txt"))
    signs = restart_signs(before, after)
    assert [sign.split(" (")[0] for sign in signs] == [
        "boot id changed", "counter went back", "uptime went back"]


def test_a_guest_that_ran_on_shows_none() -> None:
    before = GuestState.parse(read("guest-state.txt"))
    assert restart_signs(before, before) == []


def test_debian_4_17_5_can_log_dirty_pv_guests() -> None:
    info = parse_xl_info((DATA.parent / "xl" / "xl-info-4.17.5-vlab.txt").read_text())
    assert can_log_dirty("pv", info["virt_caps"])


def test_probe_during_a_live_migration_sees_the_pause() -> None:
    """The probe from mig1 while the guest moved mig2 -> mig1 (Xen 4.17.5): the
    guest was silent for about 9 s (suspend, last copy, resume on TCG)."""
    probe = parse_ping_probe(read("ping-probe-4.17.5-live-migration-mig2-to-mig1.txt"))
    assert (probe.sent, probe.received, probe.lost) == (392, 321, 71)
    assert 9.0 < probe.longest_gap < 9.2
    assert probe.gap_started == 1795658694.486355


def test_successful_live_migration_of_debian_4_17_5() -> None:
    """Debian's 4.17 logs no iteration, page or rate figures (SUSE's patches do)."""
    output = parse_migrate_output(read("xl-vvv-migrate-4.17.5-pv-mig1-to-mig2.txt"))
    assert output.succeeded and output.first_error is None
    assert output.iterations is None and output.transfer_mb_per_s is None


def test_a_local_migration_pipes_into_the_receiver_without_ssh() -> None:
    # `-s ''`: xl runs the host argument as the receiving command, through sh
    words = shlex.split(migrate_command("g1", None, ["--max_iters", "2"]))
    assert words == ["xl", "-vvv", "migrate", "-s", "", "--max_iters", "2", "g1",
                     "xl -vvv migrate-receive"]


def test_a_migration_to_another_host_goes_through_ssh() -> None:
    assert shlex.split(migrate_command("g1", "vlab2")) == ["xl", "-vvv", "migrate", "g1",
                                                           "vlab2"]
