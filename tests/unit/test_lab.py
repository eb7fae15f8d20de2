"""The lab model: the shipped lab files load, and every mistake is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.drivers.ipmipower import IPMIPowerPort
from harness.errors import ConfigError
from harness.install import xen_cmdline
from harness.ipmi import bmc_secrets
from harness.lab import DEFAULT_LAB, load_lab
from harness.paths import PROJECT_ROOT, labs_dir
from harness.targets import lab_environment


def write_lab(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def vlab_data() -> dict:
    return yaml.safe_load(DEFAULT_LAB.read_text())


def test_vlab_lab_file_loads_with_both_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENHIL_CACHE", "/var/cache/xh")
    lab = load_lab(DEFAULT_LAB, check_files=False)
    assert list(lab.hosts) == ["vlab1", "vlab2"]
    vlab2 = lab.host("vlab2")
    assert (vlab2.bmc.address, vlab2.bmc.port) == ("127.0.1.2", 6230)
    assert vlab2.bmc.password_file == Path("/var/cache/xh/vlab/bmc-password")
    assert vlab2.console.endpoint == "127.0.1.2:6231"
    assert vlab2.ssh.key_file == Path("/var/cache/xh/vlab/keys/id_ed25519")
    assert vlab2.link_address == "198.51.100.12"
    assert lab.timeout_factor == 3.0
    assert lab.reports_dir.resolve() == PROJECT_ROOT / "reports"


def test_example_lab_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = load_lab(labs_dir() / "example-lab.yaml", check_files=False)
    host = lab.host("xen-r640-02")
    assert host.family == "suse"
    assert host.timeout_factor == 1.5
    assert lab.host("xen-r640-01").bmc.password_env == "XENHIL_BMC_PASSWORD"
    # One console through ser2net's RFC 2217 on COM1, one through SOL on COM2.
    assert lab.host("xen-r640-01").console.endpoint == "rfc2217://consoles.lab.example:7001"
    assert xen_cmdline(lab.host("xen-r640-01")).startswith("console=com1 com1=115200,8n1 ")
    assert host.console.endpoint == "ipmi-sol://bmc-xen-r640-02.lab.example:623"
    assert xen_cmdline(host).startswith("console=com2 com2=115200,8n1 ")


def test_unknown_host_names_the_known_ones() -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    with pytest.raises(ConfigError, match=r"unknown host 'vlab3'; this lab has: vlab1, vlab2"):
        lab.host("vlab3")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lab file not found"):
        load_lab(tmp_path / "nope.yaml")


def test_undeclared_strategy_names_the_target_and_the_drivers(tmp_path: Path) -> None:
    data = vlab_data()
    del data["targets"]["vlab2"]["drivers"]["XenBootStrategy"]
    with pytest.raises(ConfigError, match=r"targets\.vlab2\.drivers.*missing XenBootStrategy"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_strategy_before_its_drivers_is_refused(tmp_path: Path) -> None:
    data = vlab_data()
    drivers = data["targets"]["vlab1"]["drivers"]
    data["targets"]["vlab1"]["drivers"] = dict(sorted(drivers.items()))  # strategy before SSH
    with pytest.raises(ConfigError, match=r"targets\.vlab1\.drivers: declare XenBootStrategy "
                                          r"after IPMIPowerDriver, Com1ConsoleDriver, XenSSH"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = write_lab(tmp_path, "targets:\n  vlab1: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}: not valid YAML"):
        load_lab(path)


def test_missing_resource_names_host_and_field(tmp_path: Path) -> None:
    data = vlab_data()
    del data["targets"]["vlab2"]["resources"]["NetworkService"]
    with pytest.raises(ConfigError, match=r"host vlab2: resources.NetworkService: missing"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_inline_password_is_refused(tmp_path: Path) -> None:
    data = vlab_data()
    data["targets"]["vlab1"]["resources"]["IPMIPowerPort"]["password"] = "calvin"
    with pytest.raises(ConfigError, match=r"IPMIPowerPort.password: passwords are never"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_bad_port_type(tmp_path: Path) -> None:
    data = vlab_data()
    data["targets"]["vlab1"]["resources"]["NetworkService"]["port"] = "ssh"
    with pytest.raises(ConfigError, match=r"host vlab1: NetworkService.port: expected int"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_port_out_of_range(tmp_path: Path) -> None:
    data = vlab_data()
    data["targets"]["vlab2"]["resources"]["Com1Port"]["port"] = 70000
    with pytest.raises(ConfigError, match=r"Com1Port.port: 70000 is not a TCP/UDP port"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_missing_key_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENHIL_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match=r"password_file: .*bmc-password does not exist"):
        load_lab(DEFAULT_LAB)


def test_unset_variable_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = vlab_data()
    data["xenhil"]["defaults"]["ssh_key_file"] = "${XENHIL_TEST_UNSET_VARIABLE}/id"
    monkeypatch.delenv("XENHIL_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(ConfigError, match=r"refers to \$\{XENHIL_TEST_UNSET_VARIABLE\}"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_unknown_option_lists_known_ones(tmp_path: Path) -> None:
    data = vlab_data()
    data["xenhil"]["hosts"]["vlab1"]["dom0_memory"] = "2G"
    with pytest.raises(ConfigError, match=r"host vlab1: dom0_memory: unknown option \(known:"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_options_for_a_host_without_target(tmp_path: Path) -> None:
    data = vlab_data()
    data["xenhil"]["hosts"]["vlab9"] = {"family": "debian"}
    with pytest.raises(ConfigError, match=r"xenhil.hosts.vlab9: no target of that name"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_guest_networks_are_read_and_checked(tmp_path: Path) -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    assert str(lab.hosts["vlab2"].routed_guest_network) == "203.0.113.16/28"
    data = vlab_data()
    data["xenhil"]["hosts"]["vlab1"]["routed_guest_network"] = "203.0.113.5/28"
    with pytest.raises(ConfigError, match=r"host vlab1: routed_guest_network: not an IPv4 "
                                          r"network like 203.0.113.0/28: .*host bits set"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_single_host_scenarios_name_lab_hosts(tmp_path: Path) -> None:
    assert load_lab(DEFAULT_LAB, check_files=False).single_host_scenarios_on == ("vlab1",)
    data = vlab_data()
    data["xenhil"]["single_host_scenarios_on"] = ["vlab3"]
    with pytest.raises(ConfigError, match=r"single_host_scenarios_on: no host 'vlab3' "
                                          r"\(hosts: vlab1, vlab2\)"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_one_host_scenarios_beside_are_checked(tmp_path: Path) -> None:
    lab = load_lab(DEFAULT_LAB, check_files=False)
    assert lab.single_host_scenarios_beside == {
        "vlab2": ("testsuites/networking", "testsuites/migration/test_local_migration.py")}
    for beside, problem in [
            ({"vlab3": ["testsuites/guests"]},
             r"single_host_scenarios_beside.vlab3: no such host \(hosts: vlab1, vlab2\)"),
            ({"vlab1": ["testsuites/guests"]},
             r"single_host_scenarios_beside.vlab1: the host is in single_host_scenarios_on"),
            ({"vlab2": "testsuites/guests"},
             r"single_host_scenarios_beside.vlab2: expected a list of scenario paths"),
            ({"vlab2": ["/etc/passwd"]},
             r"single_host_scenarios_beside.vlab2: '/etc/passwd' is not a path relative"),
            ({"vlab2": ["testsuites/gusets"]},
             r"single_host_scenarios_beside.vlab2: no scenarios at testsuites/gusets")]:
        data = vlab_data()
        data["xenhil"]["single_host_scenarios_beside"] = beside
        with pytest.raises(ConfigError, match=problem):
            load_lab(write_lab(tmp_path, data), check_files=False)
    data = vlab_data()
    del data["xenhil"]["single_host_scenarios_on"]
    with pytest.raises(ConfigError, match=r"single_host_scenarios_beside: needs "
                                          r"single_host_scenarios_on"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_bad_family(tmp_path: Path) -> None:
    data = vlab_data()
    data["xenhil"]["hosts"]["vlab2"]["family"] = "gentoo"
    with pytest.raises(ConfigError, match=r"host vlab2: family: 'gentoo' is not one of"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_both_password_sources_is_ambiguous(tmp_path: Path) -> None:
    data = vlab_data()
    data["targets"]["vlab1"]["resources"]["IPMIPowerPort"]["password_env"] = "X"
    with pytest.raises(ConfigError, match=r"needs exactly one of password_file or password_env"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_timeouts_scale_by_lab_and_host_factor(tmp_path: Path) -> None:
    data = vlab_data()
    data["xenhil"]["timeouts"] = {"login_prompt": 100}
    data["xenhil"]["hosts"]["vlab2"]["timeout_factor"] = 2
    lab = load_lab(write_lab(tmp_path, data), check_files=False)
    assert lab.timeouts(lab.host("vlab1"))["login_prompt"] == 300.0
    assert lab.timeouts(lab.host("vlab2"))["login_prompt"] == 600.0
    assert lab.timeouts(lab.host("vlab2"))["command"] == 360.0


def test_unknown_timeout_name(tmp_path: Path) -> None:
    data = vlab_data()
    data["xenhil"]["timeouts"] = {"login": 100}
    with pytest.raises(ConfigError, match=r"xenhil.timeouts.login: no such timeout"):
        load_lab(write_lab(tmp_path, data), check_files=False)


def test_a_relative_password_file_is_the_lab_files_neighbour_for_check_and_driver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab_dir, elsewhere = tmp_path / "labs", tmp_path / "elsewhere"
    lab_dir.mkdir()
    elsewhere.mkdir()
    (lab_dir / "bmc-password").write_text("hunter2\n")
    data = vlab_data()
    for host in ("vlab1", "vlab2"):
        data["targets"][host]["resources"]["IPMIPowerPort"]["password_file"] = "bmc-password"
    path = write_lab(lab_dir, data)
    monkeypatch.chdir(elsewhere)
    lab = load_lab(Path("..") / "labs" / "lab.yaml", check_files=False)
    with lab_environment(lab) as environment:
        driver_bmc = environment.get_target("vlab1").get_resource(IPMIPowerPort).bmc("vlab1")
    assert lab.host("vlab1").bmc.password_file == driver_bmc.password_file == (
        path.parent / "bmc-password")
    assert bmc_secrets(driver_bmc) == ("hunter2",)
