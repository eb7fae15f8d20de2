"""NPIV logic without a host: WWNs, the sysfs dumps (recorded on a virtual host from FC
trees laid out as the kernel does, tests/e2e/scenarios/fc_sysfs_tree.py), preflight
reasons, block-npiv's disk target layout, the lab file's npiv section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError, InfrastructureError
from harness.guests.config import GuestConfig
from harness.lab import DEFAULT_LAB, load_lab
from harness.npiv.script import (
    NpivDisk,
    NpivScriptUnreadable,
    npiv_target_fields,
    npiv_target_layouts,
)
from harness.npiv.sysfs import FCHost, fc_hosts_from, luns_from, parse_dump, vports_from
from harness.npiv.vports import free_vport_name, leaked_vports
from harness.npiv.wwn import InvalidWWN, VportName, default_wwnn, parse_wwn, sysfs_wwn
from harness.paths import labs_dir

DATA = Path(__file__).parent.parent / "data" / "npiv"
POOL = (VportName("c0507611a2b3c400", "c0507601a2b3c400"),
        VportName("c0507611a2b3c402", "c0507601a2b3c402"))


@pytest.mark.parametrize("text", ["21000024ff3a1b2c", "0x21000024ff3a1b2c",
                                  "21:00:00:24:FF:3A:1B:2C", " 0X21000024FF3A1B2C\n"])
def test_wwn_forms_people_and_sysfs_write(text: str) -> None:
    assert parse_wwn(text) == "21000024ff3a1b2c"


@pytest.mark.parametrize(("text", "problem"), [
    ("21000024ff3a1b2", "15 hex digits, a WWN has 16"),
    ("0x21000024ff3a1b2c00", "18 hex digits"),
    ("21000024ff3a1b2g", "'g' is not a hex digit"),
    ("2100:0024:ff3a:1b2c", "8 byte pairs"),
    ("", "0 hex digits"),
])
def test_wwn_mistakes_are_named(text: str, problem: str) -> None:
    with pytest.raises(InvalidWWN, match=problem):
        parse_wwn(text)


def test_sysfs_wwn_has_no_leading_zeros_and_zero_means_unknown() -> None:
    assert sysfs_wwn("0x1000000533f55566\n") == "1000000533f55566"
    assert sysfs_wwn("0xa00000533f55566") == "0a00000533f55566"
    assert sysfs_wwn("0x0") is None


def test_default_wwnn_follows_suse() -> None:
    # hex digit 7 is 1 in a port name, 0 in the node name
    assert default_wwnn("c0507611a2b3c400") == "c0507601a2b3c400"


def load_dump(name: str) -> str:
    return (DATA / name).read_text()


def test_fc_hosts_of_an_online_port_with_a_vport() -> None:
    hosts = fc_hosts_from(parse_dump(load_dump("fc_host-online-with-vport.txt")))
    port, vport_host = hosts
    assert port == FCHost(name="host5", port_name="21000024ff3a1b2c",
                          node_name="20000024ff3a1b2c", fabric_name="100000051e0f1a2b",
                          port_state="Online", port_type="NPort (fabric via point-to-point)",
                          max_npiv_vports=255, npiv_vports_inuse=1, vport_create=True)
    assert port.npiv_problems("100000051e0f1a2b") == []
    assert port.free_vports == 254
    # the vport's own fc_host cannot carry vports
    assert vport_host.name == "host6" and not vport_host.vport_create
    assert vport_host.npiv_problems()[0] == "no vport_create (the driver does not do NPIV)"


def test_linkdown_port_names_every_reason() -> None:
    (port,) = fc_hosts_from(parse_dump(load_dump("fc_host-linkdown.txt")))
    assert port.fabric_name is None  # the kernel shows 0x0 while the link is down
    assert port.npiv_problems("100000051e0f1a2b") == [
        "port_state is 'Linkdown', not 'Online'",
        "port_type is 'Unknown', not NPort (NPIV needs a point-to-point fabric login)",
        "fabric_name is unknown, the lab file says 100000051e0f1a2b",
    ]


def test_full_port_has_no_free_vport() -> None:
    port = fc_hosts_from(parse_dump(load_dump("fc_host-full.txt")))[0]
    assert port.npiv_problems() == ["no free vport: max_npiv_vports 2, npiv_vports_inuse 2"]


def test_vports_and_their_scsi_hosts() -> None:
    (vport,) = vports_from(parse_dump(load_dump("fc_vports-one.txt")))
    assert vport.name == "vport-5:0-0" and vport.parent == "host5"
    assert (vport.port_name, vport.node_name) == ("c0507611a2b3c400", "c0507601a2b3c400")
    assert vport.active and vport.scsi_host == "host6"


def test_absent_class_directory() -> None:
    dump = parse_dump(load_dump("fc_host-absent.txt"))
    assert not dump.present and dump.entries == {}


def test_luns_with_their_target_ports() -> None:
    luns = luns_from(load_dump("luns-host6.txt"))
    assert [(lun.address, lun.target_wwpn, lun.block, lun.number) for lun in luns] == [
        ("6:0:0:1", "500601603ea01b2c", "sdb", 1)]


def test_pool_names_in_use_are_skipped_and_leaks_found() -> None:
    vports = vports_from(parse_dump(load_dump("fc_vports-one.txt")))
    assert free_vport_name(POOL, vports) == POOL[1]
    assert [v.name for v in leaked_vports(POOL, vports)] == ["vport-5:0-0"]
    with pytest.raises(InfrastructureError, match="every WWPN of the vport pool is in use"):
        free_vport_name(POOL[:1], vports)


# Two shell idioms block-npiv scripts use to read their disk target (written here in
# the same style, not copied): peeling fields off the right end, and an array split.
PEELING = """\
    par=$(xenstore-read "$XENBUS_PATH/params")
    ARGS=$par
    LUN=${ARGS##*-*-*-*-}; ARGS=${ARGS%-*}
    TGTWWPN=${ARGS##*-*-*-}; ARGS=${ARGS%-*}
    VPORTWWNN=${ARGS##*-*-}; ARGS=${ARGS%-*}
    VPORTWWPN=${ARGS##*-}; ARGS=${ARGS%-*}
    FABRICNM=$ARGS
"""
SPLIT = """\
    ARGS=(${par//-/ })
    if [ ${#ARGS[@]} -eq 5 ]; then
      VPORTWWPNS=${ARGS[1]}
      VPORTWWNNS=${ARGS[2]}
      TGTWWPNS=${ARGS[3]}
      LUN=${ARGS[4]}
    elif [ ${#ARGS[@]} -eq 3 ]; then
      VPORTWWPNS=${ARGS[0]}
      TGTWWPNS=${ARGS[1]}
      LUN=${ARGS[2]}
    fi
"""


def test_layout_from_peeling() -> None:
    assert npiv_target_layouts(PEELING) == [
        ("fabric", "vport_wwpn", "vport_wwnn", "target_wwpn", "lun")]


def test_layouts_from_array_split_and_the_shortest_is_used() -> None:
    assert npiv_target_layouts(SPLIT) == [("vport_wwpn", "vport_wwnn", "target_wwpn", "lun"),
                                          ("vport_wwpn", "target_wwpn", "lun")]
    assert npiv_target_fields(SPLIT) == ("vport_wwpn", "target_wwpn", "lun")


def test_unreadable_scripts_say_why() -> None:
    with pytest.raises(NpivScriptUnreadable, match="no disk target parsing found"):
        npiv_target_fields("#!/bin/sh\nexit 0\n", "/etc/xen/scripts/block-npiv")
    with pytest.raises(NpivScriptUnreadable, match="field COLOUR, which the harness"):
        npiv_target_fields("COLOUR=${A[0]}\nVPWWPN=${A[1]}\n")


def test_disk_spec_in_the_scripts_order() -> None:
    disk = NpivDisk(POOL[0], "500601603ea01b2c", 3, "100000051e0f1a2b")
    assert disk.target(("vport_wwpn", "target_wwpn", "lun")) == \
        "c0507611a2b3c400-500601603ea01b2c-3"
    assert disk.target(npiv_target_fields(PEELING)) == \
        "100000051e0f1a2b-c0507611a2b3c400-c0507601a2b3c400-500601603ea01b2c-3"
    assert disk.xl_disk(("vport_wwpn", "target_wwpn", "lun"), "xvdb") == (
        "vdev=xvdb, access=rw, script=block-npiv, "
        "target=c0507611a2b3c400-500601603ea01b2c-3")


def test_guest_config_lists_its_disks() -> None:
    config = GuestConfig(name="g", kernel="/k", ramdisk="/r", address="198.51.100.101/24",
                         mac="00:16:3e:00:00:01",
                         disks=("vdev=xvdb, access=rw, target=/dev/sdb",
                                "vdev=xvdc, access=rw, script=block-npiv, target=a-b-1"))
    assert ('disk = [ "vdev=xvdb, access=rw, target=/dev/sdb", '
            '"vdev=xvdc, access=rw, script=block-npiv, target=a-b-1" ]\n') in config.render()
    plain = GuestConfig(name="g", kernel="/k", ramdisk="/r", address="198.51.100.101/24",
                        mac="00:16:3e:00:00:01")
    assert "\ndisk = " not in plain.render()


# The lab file's npiv section
NPIV = {"fabric_name": "0x100000051e0f1a2b", "target_wwpn": "50:06:01:60:3e:a0:1b:2c",
        "luns": [1, 2], "vport_pool": [{"wwpn": "c0507611a2b3c400"},
                                       {"wwpn": "C0507611A2B3C402", "wwnn": "c0507601a2b3c499"}]}


def lab_with(tmp_path: Path, npiv: dict | None = None, vlab2: dict | None = None,
             defaults: dict | None = None) -> Path:
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    if npiv is not None:
        data["xenhil"]["hosts"]["vlab1"]["npiv"] = npiv
    if vlab2 is not None:
        data["xenhil"]["hosts"]["vlab2"]["npiv"] = vlab2
    if defaults is not None:
        data["xenhil"]["defaults"]["npiv"] = defaults
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_lab_npiv_section(tmp_path: Path) -> None:
    lab = load_lab(lab_with(tmp_path, NPIV), check_files=False)
    npiv = lab.host("vlab1").npiv
    assert npiv is not None and lab.host("vlab2").npiv is None
    assert npiv.fabric_name == "100000051e0f1a2b"
    assert npiv.target_wwpn == "500601603ea01b2c"
    assert npiv.luns == (1, 2)
    assert npiv.vport_pool == (VportName("c0507611a2b3c400", "c0507601a2b3c400"),
                               VportName("c0507611a2b3c402", "c0507601a2b3c499"))


@pytest.mark.parametrize(("change", "where", "problem"), [
    ({"target_wwpn": "50:06:01:60:3e:a0:1b"}, "host vlab1: npiv.target_wwpn",
     "8 byte pairs"),
    ({"fabric_name": 1000000533005566}, "host vlab1: npiv.fabric_name",
     "write the WWN in quotes"),
    ({"luns": []}, "host vlab1: npiv.luns", "expected a list of LUN numbers"),
    ({"luns": ["1"]}, "host vlab1: npiv.luns", "expected a list of LUN numbers"),
    ({"vport_pool": [{"wwpn": "c0507601a2b3c4zz"}]},
     r"host vlab1: npiv.vport_pool\[0\].wwpn", "'z' is not a hex digit"),
    ({"vport_pool": [{"wwnn": "c0507601a2b3c401"}]},
     r"host vlab1: npiv.vport_pool\[0\].wwpn", "missing"),
    ({"vport_pool": [{"wwpn": "c0507611a2b3c400"}, {"wwpn": "0xc0507611a2b3c400"}]},
     r"host vlab1: npiv.vport_pool\[1\].wwpn", "in the pool twice"),
    ({"switch": "sw1"}, "host vlab1: npiv.switch", "unknown field"),
    ({"target_wwpn": None}, "host vlab1: npiv.target_wwpn", "missing"),
])
def test_lab_npiv_mistakes_name_file_host_and_field(tmp_path: Path, change: dict, where: str,
                                                    problem: str) -> None:
    path = lab_with(tmp_path, {**NPIV, **change})
    with pytest.raises(ConfigError, match=rf"{path}: {where}: .*{problem}"):
        load_lab(path, check_files=False)


def test_lab_vport_pools_never_overlap_between_hosts(tmp_path: Path) -> None:
    path = lab_with(tmp_path, NPIV, vlab2={**NPIV, "vport_pool": [{"wwpn": "c0507611a2b3c402"}]})
    with pytest.raises(ConfigError, match=r"host vlab2: npiv.vport_pool: WWPN c0507611a2b3c402 "
                                          r"is in the pool of host vlab1 too"):
        load_lab(path, check_files=False)


def test_lab_npiv_is_per_host(tmp_path: Path) -> None:
    path = lab_with(tmp_path, None, defaults=NPIV)
    with pytest.raises(ConfigError, match=r"xenhil\.defaults\.npiv: NPIV is per host"):
        load_lab(path, check_files=False)


def test_example_lab_npiv_sections_load() -> None:
    lab = load_lab(labs_dir() / "example-lab.yaml", check_files=False)
    first, second = lab.host("xen-r640-01").npiv, lab.host("xen-r640-02").npiv
    assert first is not None and second is not None
    assert first.target_wwpn == second.target_wwpn == "500601603ea01b2c"
    assert first.vport_pool[0] == VportName("c0507611a2b3c400", "c0507601a2b3c400")
