"""Secrets and host-supplied text: the BMC password redacted from a host's transcripts,
error text shown as text (not rich markup), no environment value in an error (a file
a lab file names is named as written)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import harness.cli
from harness.drivers.ipmipower import IPMIPowerPort
from harness.errors import ConfigError, HarnessError
from harness.ipmi import BMC, IPMITool, bmc_secrets
from harness.lab import DEFAULT_LAB, SSHEndpoint, load_lab
from harness.paths import UnknownVariable, expand
from harness.remote import CommandFailed, CommandResult, RemoteHost
from harness.targets import lab_environment

from .sshserver import SSHServer

HOSTILE_ERROR = "BMC said: [/bold] hidden? [red]no[/red] [/]"


def rendered(markup: str) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(markup)
    return out.getvalue()


def test_error_text_is_shown_verbatim() -> None:
    assert rendered(harness.cli.error_line(HarnessError(HOSTILE_ERROR))) == (
        f"error: {HOSTILE_ERROR}\n")


def test_main_prints_a_hostile_error_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_: argparse.Namespace) -> int:
        raise HarnessError(HOSTILE_ERROR)

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=fail, verbose=False)
    out = io.StringIO()
    monkeypatch.setattr(harness.cli, "build_parser", lambda: parser)
    monkeypatch.setattr(harness.cli, "console", Console(file=out, width=200,
                                                        color_system=None))
    assert harness.cli.main([]) == 2
    assert out.getvalue() == f"error: {HOSTILE_ERROR}\n"


def test_an_unknown_variable_error_shows_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENHIL_TEST_SECRET", "hunter2")
    monkeypatch.delenv("XENHIL_TEST_UNSET", raising=False)
    with pytest.raises(UnknownVariable) as raised:
        expand("${XENHIL_TEST_SECRET}/${XENHIL_TEST_UNSET}/x")
    assert "hunter2" not in f"{raised.value} {raised.value!r} {raised.value.args}"
    assert raised.value.args == ("XENHIL_TEST_UNSET",)


def test_bmc_password_from_env_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XENHIL_TEST_SECRET", "hunter2")
    assert bmc_secrets(BMC("h", "127.0.0.1", password_env="XENHIL_TEST_SECRET")) == ("hunter2",)
    monkeypatch.setenv("XENHIL_TEST_SECRET", "")
    assert bmc_secrets(BMC("h", "127.0.0.1", password_env="XENHIL_TEST_SECRET")) == ()
    monkeypatch.delenv("XENHIL_TEST_SECRET")
    assert bmc_secrets(BMC("h", "127.0.0.1", password_env="XENHIL_TEST_SECRET")) == ()
    password = tmp_path / "bmc-password"
    password.write_text("hunter2\n")
    assert bmc_secrets(BMC("h", "127.0.0.1", password_file=password)) == ("hunter2",)
    assert bmc_secrets(BMC("h", "127.0.0.1", password_file=tmp_path / "none")) == ()


def remote_host(ssh_server: SSHServer, secrets: tuple[str, ...],
                seen: list[CommandResult]) -> RemoteHost:
    endpoint = SSHEndpoint("127.0.0.1", ssh_server.port, "root", ssh_server.client_key_file,
                           ssh_server.host_public_key_file)
    return RemoteHost("host1", endpoint, on_command=seen.append, secrets=secrets)


def test_remote_host_redacts_command_stdout_and_stderr(ssh_server: SSHServer) -> None:
    seen: list[CommandResult] = []
    remote = remote_host(ssh_server, ("hunter2",), seen)
    try:
        with pytest.raises(CommandFailed) as failed:
            remote.run("echo pw=hunter2; echo hunter2 >&2; exit 1")
    finally:
        remote.close()
    result = seen[0]
    assert (result.command, result.stdout, result.stderr) == (
        "echo pw=********; echo ******** >&2; exit 1", "pw=********\n", "********\n")
    assert "hunter2" not in result.render() + str(failed.value)


def test_an_empty_secret_redacts_nothing(ssh_server: SSHServer) -> None:
    seen: list[CommandResult] = []
    remote = remote_host(ssh_server, ("",), seen)
    try:
        assert remote.run("echo plain").stdout == "plain\n"
    finally:
        remote.close()
    assert seen[0].command == "echo plain"


@pytest.fixture
def lab_with_secret_in_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab file whose BMC password_file is under a variable holding a secret."""
    monkeypatch.setenv("XENHIL_TEST_SECRET", "hunter2")
    data = yaml.safe_load(DEFAULT_LAB.read_text())
    for host in ("vlab1", "vlab2"):
        data["targets"][host]["resources"]["IPMIPowerPort"]["password_file"] = (
            "/nonexistent/${XENHIL_TEST_SECRET}/bmc-password")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_missing_file_is_named_as_written(lab_with_secret_in_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_lab(lab_with_secret_in_path)
    assert "hunter2" not in str(raised.value)
    assert str(raised.value).endswith("host vlab1: IPMIPowerPort.password_file: "
                                      "/nonexistent/${XENHIL_TEST_SECRET}/bmc-password "
                                      "does not exist")


def test_the_power_driver_names_a_missing_file_as_written(
        lab_with_secret_in_path: Path) -> None:
    lab = load_lab(lab_with_secret_in_path, check_files=False)
    with lab_environment(lab) as environment:
        bmc = environment.get_target("vlab1").get_resource(IPMIPowerPort).bmc("vlab1")
    assert bmc.password_file == Path("/nonexistent/hunter2/bmc-password")
    with pytest.raises(ConfigError) as raised:
        IPMITool(bmc).run("chassis", "power", "status")
    assert str(raised.value) == ("host vlab1: BMC password_file "
                                 "/nonexistent/${XENHIL_TEST_SECRET}/bmc-password does not exist")
