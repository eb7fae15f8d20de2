"""A host lock through labgrid's coordinator: one place per host, reserved, then locked.

labgrid's own client session (labgrid.remote.client.ClientSession, gRPC) talks to the
coordinator; each operation opens a session on an event loop of its own and closes it,
so nothing has to keep a connection alive while tests run (a place's lock outlives
the session that took it; labgrid locks never expire).

Taking a place: a reservation filtered by the place's name waits in the coordinator's
queue (by priority, then age) and is polled, which also keeps it from expiring (60 s);
once allocated, the place is locked (acquired). Releasing: the reservation, then the
lock, so the next reservation in the queue gets the place at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from labgrid.remote.common import Place, Reservation, ReservationState, ResourceEntry
from labgrid.remote.generated import labgrid_coordinator_pb2 as messages
from labgrid.remote.generated.labgrid_coordinator_pb2_grpc import CoordinatorStub

from ..errors import ConfigError, HarnessError, InfrastructureError
from ..lab import HostSpec
from .base import Holder, HostLock, WaitReporter, this_machine

log = logging.getLogger(__name__)

CALL_TIMEOUT = 15.0  # any one request to the coordinator, and connecting
POLL_INTERVAL = 1.0  # labgrid-client's own, well within a reservation's 60 s


class Coordinator:
    """A labgrid coordinator at `address` (HOST:PORT), spoken to as `owner`."""

    def __init__(self, address: str, owner: str) -> None:
        self.address = address
        self.owner = owner

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        from labgrid.remote.client import ClientSession

        class Session(ClientSession):
            def __attrs_post_init__(session) -> None:
                super().__attrs_post_init__()
                # The coordinator tells clients apart by their connection, which gRPC
                # shares between the channels of a process: one connection per session.
                session.channel = grpc.aio.insecure_channel(session.address, options=[
                    ("grpc.keepalive_time_ms", 7500),  # labgrid's own
                    ("grpc.keepalive_timeout_ms", 10000),
                    ("grpc.http2.ping_timeout_ms", 10000),
                    ("grpc.http2.max_pings_without_data", 0),
                    ("grpc.use_local_subchannel_pool", 1),
                ])
                session.stub = CoordinatorStub(session.channel)

            # labgrid names a session `host/user`; ours names the run as well
            def gethostname(session) -> str:
                return str(self.owner.partition("/")[0])

            def getuser(session) -> str:
                return str(self.owner.partition("/")[2])

        session = Session(address=self.address, loop=asyncio.get_running_loop())
        try:
            try:
                await asyncio.wait_for(session.start(), CALL_TIMEOUT)
            except Exception as error:
                reason = (f"no answer within {CALL_TIMEOUT:g} s"
                          if isinstance(error, TimeoutError) else str(error))
                raise InfrastructureError(
                    f"labgrid coordinator {self.address}: {reason}; is labgrid-coordinator "
                    "running there, and is xenhil.coordinator (or --coordinator) its "
                    "address?") from None
            yield Connection(self.address, session.stub, session.resources)
        finally:
            # bounded: a coordinator gone mid-session must not hang the run's end
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.stop(), CALL_TIMEOUT)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), CALL_TIMEOUT)

    def run(self, operation: Any) -> Any:
        """Run a coroutine on an event loop of its own (callers are not async)."""
        return asyncio.run(operation)


class Connection:
    """The requests the harness makes, each bounded, each error an InfrastructureError.
    `resources` are the exporters' resources as the coordinator announced them when the
    session started (labgrid's ClientSession.resources: exporter, group, name)."""

    def __init__(self, address: str, stub: Any,
                 resources: Mapping[str, Mapping[str, Mapping[str, ResourceEntry]]]) -> None:
        self.address = address
        self.stub = stub
        self.resources = resources

    async def call(self, name: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, name)(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise InfrastructureError(f"labgrid coordinator {self.address}: {name}: "
                                      f"{error.details()}") from None

    async def places(self) -> dict[str, Place]:
        response = await self.call("GetPlaces", messages.GetPlacesRequest())
        return {place.name: Place.from_pb2(place) for place in response.places}

    async def place(self, name: str) -> Place:
        place = (await self.places()).get(name)
        if place is None:
            raise ConfigError(f"labgrid coordinator {self.address} has no place {name}: "
                              "create the lab's places with `xenhil lab places`")
        return place

    async def reservations(self) -> dict[str, Reservation]:
        response = await self.call("GetReservations", messages.GetReservationsRequest())
        return {pb.token: Reservation.from_pb2(pb) for pb in response.reservations}

    async def holder(self, place: Place, ours: str | None = None) -> Holder | None:
        if place.acquired:
            # `changed` is when the place last changed: its lock, unless retagged since.
            return Holder(place.acquired, place.changed)
        if place.reservation and place.reservation != ours:
            reservation = (await self.reservations()).get(place.reservation)
            if reservation is not None:
                return Holder(reservation.owner, reservation.created, reserved_only=True)
        return None

    async def release(self, place: str, owner: str) -> None:
        """Unlock `place` if `owner` holds it (labgrid's release-from)."""
        await self.call("ReleasePlace", messages.ReleasePlaceRequest(placename=place,
                                                                     fromuser=owner))

    async def cancel(self, token: str) -> None:
        with contextlib.suppress(InfrastructureError):  # expired and removed meanwhile
            await self.call("CancelReservation", messages.CancelReservationRequest(token=token))


class CoordinatorHostLock(HostLock):
    def __init__(self, host: str, place: str, coordinator: Coordinator,
                 poll_interval: float = POLL_INTERVAL) -> None:
        super().__init__(host, place)
        self.coordinator = coordinator
        self.poll_interval = poll_interval
        self._token: str | None = None
        self._may_hold = False  # AcquirePlace was sent: release() unlocks

    @property
    def description(self) -> str:
        return f"host {self.host} (place {self.place} on {self.coordinator.address})"

    def acquire(self, deadline: float, waiting: WaitReporter) -> None:
        self.coordinator.run(self._acquire(deadline, waiting))

    async def _acquire(self, deadline: float, waiting: WaitReporter) -> None:
        async with self.coordinator.connect() as connection:
            await connection.place(self.place)
            request = messages.CreateReservationRequest(
                filters={"main": messages.Reservation.Filter(filter={"name": self.place})},
                prio=0.0)
            self._token = (await connection.call("CreateReservation", request)
                           ).reservation.token
            while True:
                polled = await connection.call(
                    "PollReservation", messages.PollReservationRequest(token=self._token))
                state = Reservation.from_pb2(polled.reservation).state
                if state is ReservationState.allocated:
                    break
                if state is not ReservationState.waiting:
                    raise InfrastructureError(f"{self.description}: our reservation "
                                              f"{self._token} became {state.name}")
                holder = await connection.holder(await connection.place(self.place),
                                                 ours=self._token)
                if time.monotonic() >= deadline:
                    raise waiting.gave_up(holder)
                waiting.busy(holder)
                await asyncio.sleep(max(0.0, min(self.poll_interval,
                                                 deadline - time.monotonic())))
            self._may_hold = True
            await connection.call("AcquirePlace",
                                  messages.AcquirePlaceRequest(placename=self.place))

    def release(self) -> None:
        if self._may_hold or self._token:
            self.coordinator.run(self._release())

    async def _release(self) -> None:
        async with self.coordinator.connect() as connection:
            # The reservation first: the coordinator gives a place to the next
            # reservation when it is unlocked, but only once no reservation names it.
            if self._token:
                await connection.cancel(self._token)
                self._token = None
            if self._may_hold:
                await connection.release(self.place, self.coordinator.owner)
                self._may_hold = False

    def holder(self) -> Holder | None:
        async def ask() -> Holder | None:
            async with self.coordinator.connect() as connection:
                return await connection.holder(await connection.place(self.place))

        result: Holder | None = self.coordinator.run(ask())
        return result

    def release_left(self) -> Holder | None:
        result: Holder | None = self.coordinator.run(self._release_left())
        return result

    async def _release_left(self) -> Holder | None:
        async with self.coordinator.connect() as connection:
            place = await connection.place(self.place)
            holder = await connection.holder(place)
            if holder is None:
                return None
            if holder.machine == this_machine() and holder.pid is not None and not holder.stale:
                raise HarnessError(f"{self.description} is held by {holder}, whose process "
                                   f"still runs: end that run instead (kill {holder.pid})")
            if place.reservation:  # first, as in _release()
                reservation = (await connection.reservations()).get(place.reservation)
                if reservation is not None and reservation.owner == holder.owner:
                    await connection.cancel(place.reservation)
            if place.acquired:
                await connection.release(self.place, place.acquired)
            return holder


def sync_places(hosts: Mapping[str, HostSpec], lab_name: str,
                coordinator: Coordinator) -> list[str]:
    """Create the hosts' places and set their tags as the lab file says; the changes."""

    async def sync() -> list[str]:
        changes = []
        async with coordinator.connect() as connection:
            places = await connection.places()
            for spec in hosts.values():
                current: dict[str, str] = {}
                if spec.place in places:
                    current = dict(places[spec.place].tags)
                else:
                    await connection.call("AddPlace", messages.AddPlaceRequest(name=spec.place))
                    changes.append(f"{spec.place}: created for host {spec.name}")
                comment = f"xen-hil host {spec.name} of lab {lab_name}"
                if spec.place not in places or places[spec.place].comment != comment:
                    await connection.call("SetPlaceComment", messages.SetPlaceCommentRequest(
                        placename=spec.place, comment=comment))
                # an empty value removes a tag the lab file no longer has
                update = {key: value for key, value in spec.tags.items()
                          if current.get(key) != value}
                update |= {key: "" for key in current if key not in spec.tags}
                if update:
                    await connection.call("SetPlaceTags", messages.SetPlaceTagsRequest(
                        placename=spec.place, tags=update))
                    changes.append(f"{spec.place}: tags " + ", ".join(
                        f"{key}={value}" if value else f"{key} removed"
                        for key, value in sorted(update.items())))
        return changes

    result: list[str] = coordinator.run(sync())
    return result
