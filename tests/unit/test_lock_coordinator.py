"""Hosts shared through a real labgrid coordinator on loopback: places and tags, runs
waiting for each other, giving up naming the holder, a killed run's lock released, and
pairs taken in a fixed order without deadlock."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.lab import Lab
from harness.locking import Coordinator, HostBusy, host_locks, lock, sync_places
from harness.locking.coordinator import CoordinatorHostLock

from .locks import fake_run, lab_with_places

TAGS = {"vlab1": {"tags": {"npiv": "yes", "cpu": "amd"}}}


@pytest.fixture
def lab(tmp_path: Path, coordinator: str) -> Lab:
    lab = lab_with_places(tmp_path, coordinator=coordinator, hosts=TAGS)
    sync_places(lab.hosts, lab.name, Coordinator(coordinator, "test/setup:0"))
    return lab


def places(address: str) -> dict[str, Any]:
    coordinator = Coordinator(address, "test/reader:0")

    async def read() -> dict[str, Any]:
        async with coordinator.connect() as connection:
            return await connection.places()

    return dict(coordinator.run(read()))


def reservations(address: str) -> list[str]:
    coordinator = Coordinator(address, "test/reader:0")

    async def read() -> list[str]:
        async with coordinator.connect() as connection:
            return [res.owner for res in (await connection.reservations()).values()]

    return list(coordinator.run(read()))


def runner(lab: Lab, owner: str, hosts: list[str]) -> list[CoordinatorHostLock]:
    locks = host_locks(lab, hosts, owner=owner)
    for host_lock in locks:
        assert isinstance(host_lock, CoordinatorHostLock)
        host_lock.poll_interval = 0.1
    return locks  # type: ignore[return-value]


def test_places_are_created_and_follow_the_lab_file(tmp_path: Path, coordinator: str) -> None:
    lab = lab_with_places(tmp_path, coordinator=coordinator, hosts=TAGS)
    client = Coordinator(coordinator, "test/setup:0")
    assert sync_places(lab.hosts, lab.name, client) == [
        "vlab-vlab1: created for host vlab1", "vlab-vlab1: tags cpu=amd, npiv=yes",
        "vlab-vlab2: created for host vlab2"]
    created = places(coordinator)
    assert created["vlab-vlab1"].tags == {"npiv": "yes", "cpu": "amd"}
    assert created["vlab-vlab1"].comment == "xen-hil host vlab1 of lab vlab"
    assert created["vlab-vlab2"].tags == {}

    retagged = lab_with_places(tmp_path, coordinator=coordinator,
                               hosts={"vlab1": {"tags": {"npiv": "no"}}})
    assert sync_places(retagged.hosts, retagged.name, client) == [
        "vlab-vlab1: tags cpu removed, npiv=no"]
    assert places(coordinator)["vlab-vlab1"].tags == {"npiv": "no"}
    assert sync_places(retagged.hosts, retagged.name, client) == []


def test_a_second_runner_waits_and_then_gets_the_host(
        lab: Lab, coordinator: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    got_it = threading.Event()
    errors: list[BaseException] = []

    def runner_b() -> None:
        try:
            with lock(runner(lab, "machine-b/bob:2", ["vlab1"]), wait_minutes=1):
                got_it.set()
        except BaseException as error:
            errors.append(error)

    with lock(runner(lab, "machine-a/alice:1", ["vlab1"]), wait_minutes=1):
        assert places(coordinator)["vlab-vlab1"].acquired == "machine-a/alice:1"
        thread = threading.Thread(target=runner_b)
        thread.start()
        assert not got_it.wait(2)
        waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
        assert waiting and "is held by machine-a/alice:1 since" in waiting[0]
    released = time.monotonic()
    assert got_it.wait(10), errors
    assert time.monotonic() - released < 3  # at once, not at the coordinator's next round
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert places(coordinator)["vlab-vlab1"].acquired is None
    assert reservations(coordinator) == []


def test_waiting_ends_with_an_error_naming_the_holder(lab: Lab, coordinator: str) -> None:
    with lock(runner(lab, "machine-a/alice:1", ["vlab1"]), wait_minutes=1):
        start = time.monotonic()
        with pytest.raises(HostBusy) as busy, \
                lock(runner(lab, "machine-b/bob:2", ["vlab2", "vlab1"]), wait_minutes=0.03):
            pytest.fail("got a host another runner holds")
        assert 1.5 < time.monotonic() - start < 10
        # the host it did get is given back, and its reservation is gone
        assert places(coordinator)["vlab-vlab2"].acquired is None
        assert reservations(coordinator) == ["machine-a/alice:1"]
    message = str(busy.value)
    assert message.startswith(f"host vlab1 (place vlab-vlab1 on {coordinator}) is still held "
                              "by machine-a/alice:1 since ")
    assert "after waiting 0.03 min" in message
    assert "`xenhil lab release vlab1`" in message


def test_a_killed_runs_lock_is_stale_and_lab_release_frees_it(
        lab: Lab, coordinator: str, capsys: pytest.CaptureFixture[str]) -> None:
    with fake_run(lab, "vlab1", coordinator) as child:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    holder = host_locks(lab, ["vlab1"])[0].holder()
    assert holder is not None and holder.pid == child.pid and holder.stale
    assert f"stale: its process {child.pid} is gone" in str(holder)

    assert main(["--lab", str(lab.path), "lab", "release", "vlab1"]) == 0
    said = capsys.readouterr().err
    assert f"host vlab1: released the lock of {holder.owner}" in said
    assert places(coordinator)["vlab-vlab1"].acquired is None
    assert reservations(coordinator) == []
    with lock(runner(lab, "machine-b/bob:2", ["vlab1"]), wait_minutes=0):
        pass  # free at once


def test_lab_release_refuses_a_live_runs_lock(lab: Lab, coordinator: str) -> None:
    with fake_run(lab, "vlab1", coordinator) as child:
        assert main(["--lab", str(lab.path), "lab", "release", "vlab1"]) == 2
        assert places(coordinator)["vlab-vlab1"].acquired.endswith(f":{child.pid}")


def test_sigterm_gives_the_hosts_back(lab: Lab, coordinator: str) -> None:
    with fake_run(lab, "vlab1,vlab2", coordinator) as child:
        assert places(coordinator)["vlab-vlab2"].acquired.endswith(f":{child.pid}")
        child.terminate()
        assert child.wait(20) != 0
    assert [place.acquired for place in places(coordinator).values()] == [None, None]
    assert reservations(coordinator) == []


def test_pairs_in_any_order_never_deadlock(lab: Lab, coordinator: str) -> None:
    held: dict[str, str] = {}
    overlaps: list[str] = []
    guard = threading.Lock()

    def fake_runner(owner: str, hosts: list[str], errors: list[BaseException]) -> None:
        try:
            with lock(runner(lab, owner, hosts), wait_minutes=1):
                with guard:
                    overlaps.extend(f"{host}: {held[host]} and {owner}"
                                    for host in hosts if host in held)
                    held.update(dict.fromkeys(hosts, owner))
                time.sleep(0.05)
                with guard:
                    for host in hosts:
                        del held[host]
        except BaseException as error:
            errors.append(error)

    for repetition in range(20):
        errors: list[BaseException] = []
        threads = [threading.Thread(target=fake_runner, args=(f"r{repetition}/{name}:1",
                                                               hosts, errors))
                   for name, hosts in (("pair", ["vlab1", "vlab2"]), ("one", ["vlab2"]),
                                       ("reversed", ["vlab2", "vlab1"]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), \
            f"repetition {repetition}: deadlock"
        assert not errors, errors
    assert not overlaps
    assert reservations(coordinator) == []
