"""Live migration (B16): System's migration steps through the Windows backend against the fake computecore
(tests/fakehcs), what reaches HCS (the documents, the socket resource on the right operation, the waits), how
failures read, what a backend without migration says, and the GroupLiveMigration events as a stream."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import fakehcs
import pytest

from hcsshim.hcs import errors, schema2
from hcsshim.hcs import windows as W
from hcsshim.hcs.backend import EVENT_GROUP_LIVE_MIGRATION, EVENT_SYSTEM_EXITED, Backend, EventSink, supports
from hcsshim.hcs.backend import MigrationHandle as MigrationCapability
from hcsshim.hcs.migration import MigrationConfig, additional_details, parse_notification
from hcsshim.hcs.resourcepaths import LIVE_MIGRATION_SOCKET_URI
from hcsshim.hcs.system import System, create_compute_system
from hcsshim.hcs.win32 import loader

T = TypeVar("T")
PROPS = {"Id": "vm1", "SystemType": "VirtualMachine", "RuntimeOsType": "Linux"}
DENIED = json.dumps({"Error": -2147024891, "ErrorMessage": "Access is denied.",
                     "ErrorEvents": [{"Message": "no migration for you", "Provider": "hcs", "EventId": 9}]})
SOCKET = 0x5A5A0001  # a SOCKET handle as HCS would be given it
INFINITE = 0xFFFFFFFF


@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakehcs.FakeDll]:
    with fakehcs.installed(tmp_path_factory) as fakes:
        yield fakes.computecore
        assert fakes.computecore.open_operations() == 0, "an HCS operation was left open"


def go(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def vm(fake: fakehcs.FakeDll) -> System:
    fake.set_result("HcsWaitForOperationResult", 0, json.dumps(PROPS))
    system = await create_compute_system("vm1", "{}", backend=W.WindowsBackend())
    fake.set_result("HcsWaitForOperationResult", 0)
    return system


def calls_of(fake: fakehcs.FakeDll, function: str) -> list[dict[str, Any]]:
    return [c for c in fake.calls() if c["function"] == function]


def handle_of(fake: fakehcs.FakeDll) -> int:
    return int(calls_of(fake, "HcsCreateComputeSystem")[-1]["out"]["computeSystem"])


def operation_calls(fake: fakehcs.FakeDll, operation: int) -> list[str]:
    """The functions called with `operation`, in order."""
    return [c["function"] for c in fake.calls() if c["args"].get("operation") == operation]


# -- the steps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "function"), [
    ("initialize_live_migration_on_source", "HcsInitializeLiveMigrationOnSource"),
    ("start_live_migration_transfer", "HcsStartLiveMigrationTransfer"),
    ("finalize_live_migration", "HcsFinalizeLiveMigration"),
    ("cancel_live_migration", "HcsCancelLiveMigration"),
])
def test_each_step_runs_under_its_own_operation_waited_for_without_a_watchdog(fake: fakehcs.FakeDll, method: str,
                                                                               function: str) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            await getattr(system, method)()
            (call,) = calls_of(fake, function)
            assert (call["args"]["computeSystem"], call["args"]["options"]) == (handle_of(fake), "{}")
            operation = call["args"]["operation"]
            assert operation_calls(fake, operation) == [function, "HcsWaitForOperationResult", "HcsCloseOperation"]
            assert calls_of(fake, "HcsWaitForOperationResult")[-1]["args"]["timeoutMs"] == INFINITE
            assert "HcsAddResourceToOperation" not in fake.functions()

    go(body())


def test_the_step_options_are_written_as_go_writes_them(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            await system.initialize_live_migration_on_source(schema2.MigrationInitializeOptions(
                origin=schema2.MigrationOrigin.SOURCE, memory_transport=schema2.MigrationMemoryTransport.TCP,
                memory_transfer_throttle_params=schema2.MemoryMigrationTransferThrottleParams(skip_throttling=False),
                checksum_verification=True))
            await system.start_live_migration_transfer(schema2.MigrationTransferOptions(origin="Source"))
            await system.finalize_live_migration(schema2.MigrationFinalizedOptions(
                origin="Source", finalized_operation=schema2.MigrationFinalOperation.STOP))
            await system.cancel_live_migration('{"Origin":"Destination"}')
            sent = {f: calls_of(fake, f)[-1]["args"]["options"] for f in (
                "HcsInitializeLiveMigrationOnSource", "HcsStartLiveMigrationTransfer", "HcsFinalizeLiveMigration",
                "HcsCancelLiveMigration")}
            assert sent == {
                "HcsInitializeLiveMigrationOnSource": '{"Origin":"Source","MemoryTransport":"TCP",'
                                                      '"MemoryTransferThrottleParams":{"SkipThrottling":false},'
                                                      '"ChecksumVerification":true}',
                "HcsStartLiveMigrationTransfer": '{"Origin":"Source"}',
                "HcsFinalizeLiveMigration": '{"Origin":"Source","FinalizedOperation":"Stop"}',
                "HcsCancelLiveMigration": '{"Origin":"Destination"}',
            }

    go(body())


def test_the_source_start_adds_the_socket_to_its_operation_before_starting(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            await system.start_live_migration_on_source(MigrationConfig(SOCKET, session_id=7))
            (start,) = calls_of(fake, "HcsStartLiveMigrationOnSource")
            assert start["args"]["options"] == '{"NetworkSettings":{"SessionId":7}}'
            operation = start["args"]["operation"]
            assert operation_calls(fake, operation) == ["HcsAddResourceToOperation", "HcsStartLiveMigrationOnSource",
                                                        "HcsWaitForOperationResult", "HcsCloseOperation"]
            (resource,) = calls_of(fake, "HcsAddResourceToOperation")
            assert resource["args"] == {"operation": operation, "resourceType": 4,  # HcsResourceTypeSocket
                                        "uri": "hcs:/VirtualMachine/LiveMigrationSocket", "handle": SOCKET}
            assert LIVE_MIGRATION_SOCKET_URI == "hcs:/VirtualMachine/LiveMigrationSocket"
            assert system.started_time is None  # the source was started before

    go(body())


def test_the_destination_starts_with_its_migration_options_and_the_socket(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        with socket.socket() as sock:
            async with await vm(fake) as system:
                await system.start_with_migration_options(MigrationConfig(sock, session_id=0x1234))
                (start,) = calls_of(fake, "HcsStartComputeSystem")
                assert start["args"]["options"] == '{"DestinationMigrationOptions":{"NetworkSettings":' \
                                                   '{"SessionId":4660}}}'
                operation = start["args"]["operation"]
                assert operation_calls(fake, operation)[:2] == ["HcsAddResourceToOperation", "HcsStartComputeSystem"]
                assert calls_of(fake, "HcsAddResourceToOperation")[-1]["args"]["handle"] == sock.fileno()
                assert calls_of(fake, "HcsWaitForOperationResult")[-1]["args"]["timeoutMs"] == INFINITE
                assert system.started_time is not None

    go(body())


def test_a_session_without_an_id_sends_empty_network_settings_as_go_does() -> None:
    assert MigrationConfig(SOCKET).start_options().to_json() == {"NetworkSettings": {}}


# -- failures -------------------------------------------------------------------------------------------------


def test_a_failed_step_names_the_system_and_the_operation_with_the_hcs_events(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            fake.queue_result("HcsWaitForOperationResult", 0x80070005, DENIED)
            with pytest.raises(errors.SystemError) as caught:
                await system.start_live_migration_transfer()
            err = caught.value
            assert str(err) == ("hcs::System::StartLiveMigrationTransfer vm1: Access is denied.\n"
                                "[Event Detail: no migration for you Provider: hcs EventID: 9]")
            assert (err.id, err.op, err.hresult) == ("vm1", "hcs::System::StartLiveMigrationTransfer", 0x80070005)
            assert errors.is_access_is_denied(err)

    go(body())


def test_a_socket_hcs_refuses_fails_the_start_before_it_reaches_hcs(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            fake.queue_result("HcsAddResourceToOperation", 0x80070006)
            with pytest.raises(errors.SystemError) as caught:
                await system.start_with_migration_options(MigrationConfig(SOCKET, 1))
            assert str(caught.value) == "hcs::System::Start vm1: The handle is invalid."
            assert caught.value.inner.function == "HcsAddResourceToOperation"  # type: ignore[union-attr]
            assert "HcsStartComputeSystem" not in fake.functions() and system.started_time is None

    go(body())


def test_steps_on_a_closed_system_fail_without_reaching_hcs(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        system = await vm(fake)
        await system.close()
        before = len(fake.calls())
        for step, op in [(system.initialize_live_migration_on_source(), "InitializeLiveMigrationOnSource"),
                         (system.start_live_migration_on_source(MigrationConfig(SOCKET)), "StartLiveMigrationOnSource"),
                         (system.start_live_migration_transfer(), "StartLiveMigrationTransfer"),
                         (system.finalize_live_migration(), "FinalizeLiveMigration"),
                         (system.cancel_live_migration(), "CancelLiveMigration"),
                         (system.start_with_migration_options(MigrationConfig(SOCKET)), "Start")]:
            with pytest.raises(errors.SystemError) as caught:
                await step
            assert str(caught.value).startswith(f"hcs::System::{op} vm1: ") and errors.is_already_closed(caught.value)
        assert len(fake.calls()) == before

    go(body())


def test_a_windows_without_the_migration_exports_says_not_supported(tmp_path_factory: pytest.TempPathFactory) -> None:
    async def body(fakes: fakehcs.Fakes) -> None:
        async with await vm(fakes.computecore_old) as system:
            with pytest.raises(errors.SystemError) as caught:
                await system.initialize_live_migration_on_source()
            err = caught.value
            assert errors.is_not_supported(err) and err.op == "hcs::System::InitializeLiveMigrationOnSource"
            assert "has no export HcsInitializeLiveMigrationOnSource" in str(err)

    with fakehcs.installed(tmp_path_factory) as fakes:
        loader.set_library("computecore", fakes.built.computecore_old)
        go(body(fakes))
        assert fakes.computecore_old.open_operations() == 0


class _PlainHandle:
    """A SystemHandle of a backend without live migration (only what these tests touch)."""

    id = "vm1"

    def set_event_sink(self, sink: EventSink) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_backend_without_migration_refuses_every_step_as_not_supported() -> None:
    async def body() -> None:
        handle = _PlainHandle()
        assert not supports(handle, MigrationCapability)
        system = System("vm1", handle, Backend.__new__(Backend))  # type: ignore[arg-type]
        for step in (system.initialize_live_migration_on_source(), system.cancel_live_migration(),
                     system.start_with_migration_options(MigrationConfig(SOCKET))):
            with pytest.raises(errors.SystemError) as caught:
                await step
            assert errors.is_not_supported(caught.value) and "vm1: The request is not supported." in str(caught.value)
        await system.close()

    go(body())


def test_a_cancel_reaches_hcs_while_a_transfer_is_still_waiting(fake: fakehcs.FakeDll,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    transfer = W.cc.start_live_migration_transfer

    def slow_transfer(*args: Any) -> None:
        entered.set()
        release.wait(5)
        transfer(*args)

    monkeypatch.setattr(W.cc, "start_live_migration_transfer", slow_transfer)

    async def body() -> None:
        async with await vm(fake) as system:
            running = asyncio.ensure_future(system.start_live_migration_transfer())
            assert await asyncio.to_thread(entered.wait, 5)
            await asyncio.wait_for(system.cancel_live_migration(schema2.MigrationCancelOptions(origin="Source")), 5)
            assert "HcsCancelLiveMigration" in fake.functions() and not running.done()
            release.set()
            await asyncio.wait_for(running, 5)

    go(body())


# -- notifications --------------------------------------------------------------------------------------------


def test_migration_events_arrive_in_order_as_documents_until_the_system_stops(fake: fakehcs.FakeDll,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            handle = handle_of(fake)
            async with system.migration_notifications() as notifications:
                for kind, data in [(EVENT_GROUP_LIVE_MIGRATION, '{"Origin":"Source","Event":"SetupDone"}'),
                                   (6, None),  # not a migration event: not on this stream
                                   (EVENT_GROUP_LIVE_MIGRATION, None),  # HCS sometimes sends no data
                                   (EVENT_GROUP_LIVE_MIGRATION, "not-json"),  # logged and dropped
                                   (EVENT_GROUP_LIVE_MIGRATION, '{"Event":"MigrationDone","Result":"Success"}'),
                                   (EVENT_SYSTEM_EXITED, '{"Status":0}')]:
                    assert fake.fire_event(handle, kind, data, threaded=True) == 0
                seen = [(n.origin, n.event, n.result) async for n in notifications]
            assert seen == [("Source", "SetupDone", ""), ("", "", ""), ("", "MigrationDone", "Success")]
            assert "failed to unmarshal migration notification payload" in caplog.text

    with caplog.at_level(logging.WARNING, logger="hcsshim.hcs"):
        go(body())


def test_a_stream_closed_by_its_reader_ends_and_others_go_on(fake: fakehcs.FakeDll) -> None:
    async def body() -> None:
        async with await vm(fake) as system:
            first, second = system.migration_notifications(), system.migration_notifications()
            first.close()
            fake.fire_event(handle_of(fake), EVENT_GROUP_LIVE_MIGRATION, '{"Event":"BlackoutStarted"}', threaded=True)
            assert [n async for n in first] == []
            assert (await asyncio.wait_for(anext(second), 5)).event == schema2.MigrationEvent.BLACKOUT_STARTED
        assert [n async for n in second] == []  # closing the system ends it

    go(body())


def test_additional_details_read_as_their_typed_document() -> None:
    info = parse_notification('{"Event":"BlackoutExited","Result":"Success","AdditionalDetails":'
                              '{"BlackoutDurationMilliseconds":1234,"BlackoutStopTimestamp":"2026-04-23T12:34:56Z"}}')
    assert info is not None
    details = additional_details(info, schema2.BlackoutExitedEventDetails)
    assert details == schema2.BlackoutExitedEventDetails(blackout_duration_milliseconds=1234,
                                                         blackout_stop_timestamp="2026-04-23T12:34:56Z")
    assert additional_details(schema2.OperationSystemMigrationNotificationInfo(event="SetupDone"),
                              schema2.BlackoutExitedEventDetails) is None
    assert parse_notification("null") == schema2.OperationSystemMigrationNotificationInfo()  # Go reads null so
    assert parse_notification('["SetupDone"]') is None
