"""Harness self-test: the NPIV code against FC transport sysfs trees made on a real
host (fc_sysfs_tree.py: the kernel's layout and formats) under a directory, read and
written through the same SSH path as on a lab host with an HBA. One plain booted host
is enough. Run by tests/e2e/test_run.py; the file name does not start with test_.

With XENHIL_RECORD_NPIV=DIR in the environment, the raw outputs of the dump commands
are saved there (that is how tests/data/npiv/ was recorded).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from fc_sysfs_tree import FCTree

from harness.host import Host
from harness.npiv.preflight import npiv_preflight
from harness.npiv.script import read_target_fields
from harness.npiv.sysfs import FCSysfs
from harness.npiv.vports import leaked_vports
from harness.npiv.wwn import NpivConfig, VportName

FABRIC = "100000051e0f1a2b"
PORT = "21000024ff3a1b2c"
TARGET = "500601603ea01b2c"
POOL = (VportName("c0507611a2b3c400", "c0507601a2b3c400"),
        VportName("c0507611a2b3c402", "c0507601a2b3c402"))
CONFIG = NpivConfig(fabric_name=FABRIC, target_wwpn=TARGET, luns=(1,), vport_pool=POOL)
SCRIPTS = ("block-npiv", "block-npiv-common.sh", "block-npiv-vport")
# a disk target parsed in the array idiom (as SUSE's block-npiv does; not its text)
BLOCK_NPIV = """#!/bin/bash
par=$(xenstore-read "$XENBUS_PATH/params")
ARGS=(${par//-/ })
VPWWPN=${ARGS[0]}
TGTWWPN=${ARGS[1]}
LUN=${ARGS[2]}
"""


@pytest.fixture
def tree(lab_host: Host, request: pytest.FixtureRequest) -> Iterator[FCTree]:
    root = f"/tmp/xenhil-npiv/{request.node.originalname}"
    yield FCTree(root)
    lab_host.run(f"rm -rf {shlex.quote(root)}")


def build(host: Host, tree: FCTree) -> FCSysfs:
    host.run(tree.script())
    return FCSysfs(host, tree.root)


def record(host: Host, sysfs: FCSysfs, name: str, command: str) -> None:
    """Keep the raw output of a dump command as unit test data, when asked to."""
    directory = os.environ.get("XENHIL_RECORD_NPIV")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / name).write_text(host.run(command).stdout)


def online_port_with_vport_and_lun(tree: FCTree) -> str:
    device = tree.port(5, port_name=PORT, node_name="20000024ff3a1b2c", fabric_name=FABRIC,
                       npiv_vports_inuse=1)
    vport_host = tree.vport(device, 0, 6, wwpn=POOL[0].wwpn, wwnn=POOL[0].wwnn,
                            fabric_name=FABRIC)
    tree.lun(vport_host, 0, 1, target_wwpn=TARGET, block="sdb")
    return vport_host


def test_real_host_without_hba(lab_host: Host) -> None:
    """The host itself (/): no FC transport, no block-npiv: the skip names both."""
    preflight = npiv_preflight(lab_host, CONFIG)
    assert not preflight.ready and preflight.port is None
    assert preflight.missing[0] == ("no FC HBA: /sys/class/fc_host does not exist (FC "
                                    "transport scsi_transport_fc not loaded)")
    assert "/etc/xen/scripts/block-npiv missing (SUSE xen-tools' NPIV hotplug scripts)" \
        in preflight.missing


def test_online_port_is_ready(lab_host: Host, tree: FCTree) -> None:
    online_port_with_vport_and_lun(tree)
    tree.scripts(*SCRIPTS[1:], block_npiv=BLOCK_NPIV)
    sysfs = build(lab_host, tree)
    record(lab_host, sysfs, "fc_host-online-with-vport.txt", sysfs.fc_host_command())
    preflight = npiv_preflight(lab_host, CONFIG, sysfs, tree.root + "/etc/xen/scripts")
    assert preflight.ready, preflight.missing
    assert preflight.port is not None and preflight.port.name == "host5"
    assert preflight.port.port_name == PORT and preflight.port.fabric_name == FABRIC
    # block-npiv's field order, read from the script on the host
    fields = read_target_fields(lab_host, tree.root + "/etc/xen/scripts")
    assert fields == ("vport_wwpn", "target_wwpn", "lun")


def test_linkdown_port_is_the_skip_reason(lab_host: Host, tree: FCTree) -> None:
    tree.port(5, port_name=PORT, node_name="20000024ff3a1b2c", fabric_name="0",
              port_state="Linkdown", port_type="Unknown")
    tree.scripts(*SCRIPTS)
    sysfs = build(lab_host, tree)
    record(lab_host, sysfs, "fc_host-linkdown.txt", sysfs.fc_host_command())
    preflight = npiv_preflight(lab_host, CONFIG, sysfs, tree.root + "/etc/xen/scripts")
    assert preflight.missing == (
        "no FC port can take a vport: host5: port_state is 'Linkdown', not 'Online', "
        "port_type is 'Unknown', not NPort (NPIV needs a point-to-point fabric login), "
        f"fabric_name is unknown, the lab file says {FABRIC}",)


def test_full_vport_capacity_is_the_skip_reason(lab_host: Host, tree: FCTree) -> None:
    device = tree.port(5, port_name=PORT, node_name="20000024ff3a1b2c", fabric_name=FABRIC,
                       max_npiv_vports=2, npiv_vports_inuse=2)
    for number, name in enumerate(POOL):
        tree.vport(device, number, 6 + number, wwpn=name.wwpn, wwnn=name.wwnn,
                   fabric_name=FABRIC)
    tree.scripts(*SCRIPTS)
    sysfs = build(lab_host, tree)
    record(lab_host, sysfs, "fc_host-full.txt", sysfs.fc_host_command())
    preflight = npiv_preflight(lab_host, CONFIG, sysfs, tree.root + "/etc/xen/scripts")
    assert preflight.port is None
    assert "host5: no free vport: max_npiv_vports 2, npiv_vports_inuse 2" \
        in preflight.missing[0]


def test_lun_behind_the_target_and_a_missing_lun(lab_host: Host, tree: FCTree) -> None:
    vport_host = online_port_with_vport_and_lun(tree)
    sysfs = build(lab_host, tree)
    scsi_host = vport_host.rsplit("/", 1)[1]
    record(lab_host, sysfs, "luns-host6.txt", sysfs.lun_command(scsi_host))
    found = sysfs.find_lun(scsi_host, "0x" + TARGET, 1)
    assert found is not None and found.block == "sdb" and found.address == "6:0:0:1"
    assert sysfs.find_lun(scsi_host, TARGET, 2) is None, "LUN 2 is not in the tree"
    assert sysfs.find_lun(scsi_host, "500601603ea01b2d", 1) is None, "other target port"
    assert sysfs.find_lun("host5", TARGET, 1) is None, "the LUN is on the vport, not host5"


def test_leaked_vport_is_found_and_skipped(lab_host: Host, tree: FCTree) -> None:
    online_port_with_vport_and_lun(tree)
    sysfs = build(lab_host, tree)
    record(lab_host, sysfs, "fc_vports-one.txt", sysfs.vports_command())
    vports = sysfs.vports()
    assert [(v.name, v.port_name, v.scsi_host) for v in vports] == [
        ("vport-5:0-0", POOL[0].wwpn, "host6")]
    assert leaked_vports(POOL, vports) == vports
    assert sysfs.vport("0x" + POOL[0].wwpn) == vports[0]


def test_create_and_delete_write_what_the_kernel_documents(lab_host: Host,
                                                           tree: FCTree) -> None:
    online_port_with_vport_and_lun(tree)
    sysfs = build(lab_host, tree)
    sysfs.create_vport("host5", POOL[1])
    written = lab_host.run(f"cat {sysfs.path('/sys/class/fc_host/host5/vport_create')}")
    assert written.stdout == f"{POOL[1].wwpn}:{POOL[1].wwnn}\n"  # 16 hex digits, no 0x
    (vport,) = sysfs.vports()
    sysfs.delete_vport(vport)
    deleted = lab_host.run(f"cat '{sysfs.path('/sys/class/fc_vports/vport-5:0-0/vport_delete')}'")
    assert deleted.stdout == "1\n"


def test_absent_fc_transport_in_a_tree(lab_host: Host, tree: FCTree) -> None:
    sysfs = build(lab_host, tree)
    record(lab_host, sysfs, "fc_host-absent.txt", sysfs.fc_host_command())
    assert not sysfs.fc_transport_loaded() and sysfs.fc_hosts() == []
