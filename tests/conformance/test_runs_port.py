"""The workflow-run methods of the backend port, directly: what every backend must do."""

from __future__ import annotations

import pytest

from relay.backends.base import Backend
from relay.models import DlqEntry, Event, Message, MessageState, Settlement
from relay.workflows.model import RunEnded, RunQuery, RunState, WorkflowRun

T0 = 1_800_000_000_000
URL = "https://example.com/wf"


@pytest.fixture
async def backend(backend: Backend, request: pytest.FixtureRequest) -> Backend:
    if request.node.callspec.params.get("backend") == "aws":
        pytest.skip("workflow runs on AWS: not implemented yet (AwsBackend raises for runs)")
    await backend.open()
    return backend


def _message(message_id: str, run_id: str, call_type: str = "step", body: bytes = b"") -> Message:
    return Message(
        id=message_id,
        url=URL,
        method="POST",
        body=body or message_id.encode(),
        headers=[],
        max_retries=3,
        timeout=30,
        not_before=T0,
        created_at=T0,
        run_id=run_id,
        call_type=call_type,
    )


def _run(run_id: str, message_id: str, url: str = URL) -> WorkflowRun:
    return WorkflowRun(
        run_id=run_id,
        url=url,
        created_at=T0,
        message_id=message_id,
        payload=b'{"n": 1}',
        settings=[("Upstash-Forward-X", "1")],
    )


async def _start(backend: Backend, run_id: str, url: str = URL) -> None:
    init = _message(f"{run_id}_init", run_id, body=b'{"n": 1}')
    await backend.accept_run_messages([init], [], T0, 0, [_run(run_id, init.id, url)])


async def test_init_creates_the_run_once(backend: Backend) -> None:
    try:
        init = _message("m0", "wfr_1", body=b'{"n": 1}')
        [first] = await backend.accept_run_messages([init], [], T0, 0, [_run("wfr_1", "m0")])
        assert (first.message_id, first.deduplicated) == ("m0", False)
        again = _message("m0b", "wfr_1", body=b"other")
        [second] = await backend.accept_run_messages([again], [], T0, 0, [_run("wfr_1", "m0b")])
        assert (second.message_id, second.deduplicated) == ("m0", True)
        assert await backend.get_message("m0b") is None
        run = await backend.get_run("wfr_1")
        assert run is not None and run.state is RunState.RUN_STARTED
        assert (run.payload, run.settings, run.entries) == (
            b'{"n": 1}',
            [("Upstash-Forward-X", "1")],
            1,
        )
        stored = await backend.get_message("m0")
        assert stored is not None and stored.entry == 0
    finally:
        await backend.close()


async def test_steps_append_in_order_and_entries_read_up_to_an_index(backend: Backend) -> None:
    try:
        await _start(backend, "wfr_2")
        steps = [_message(f"s{i}", "wfr_2") for i in (1, 2, 3)]
        plain = Message(
            id="plain", url=URL, method="POST", body=b"p", headers=[], max_retries=3,
            timeout=30, not_before=T0, created_at=T0,
        )  # fmt: skip
        answers = await backend.accept_run_messages([steps[0], plain, *steps[1:]], [], T0, 0, [])
        assert [a.message_id for a in answers] == ["s1", "plain", "s2", "s3"]
        for index, step in enumerate(steps, start=1):
            stored = await backend.get_message(step.id)
            assert stored is not None and stored.entry == index
        entries = await backend.run_entries("wfr_2", 2)
        assert [(e.index, e.message_id, e.body) for e in entries] == [
            (0, "wfr_2_init", b'{"n": 1}'),
            (1, "s1", b"s1"),
            (2, "s2", b"s2"),
        ]
        assert len(await backend.run_entries("wfr_2")) == 4
    finally:
        await backend.close()


async def test_messages_for_an_ended_or_unknown_run_are_refused_whole(backend: Backend) -> None:
    try:
        await _start(backend, "wfr_3")
        ended = await backend.end_run("wfr_3", RunState.RUN_SUCCESS, T0 + 1, response='"ok"')
        assert ended is not None and ended[1] and ended[0].response == '"ok"'
        again = await backend.end_run("wfr_3", RunState.RUN_CANCELED, T0 + 2)
        assert again is not None and not again[1] and again[0].state is RunState.RUN_SUCCESS
        assert await backend.end_run("wfr_none", RunState.RUN_CANCELED, T0) is None
        for call_type in ("step", "toCallback", "fromCallback"):
            with pytest.raises(RunEnded):
                await backend.accept_run_messages(
                    [_message("ok1", "wfr_none"), _message("late", "wfr_3", call_type)],
                    [],
                    T0,
                    0,
                    [],
                )
            assert await backend.get_message("late") is None
        # a failure callback of a run that has ended is still taken
        await backend.accept_run_messages([_message("fc", "wfr_3", "failureCall")], [], T0, 0, [])
        assert await backend.get_message("fc") is not None
        assert len(await backend.run_entries("wfr_3")) == 1
    finally:
        await backend.close()


async def test_find_runs_going_on_by_ids_or_url(backend: Backend) -> None:
    try:
        for run_id, url in (("wfr_a", URL + "/a"), ("wfr_b", URL + "/b"), ("wfr_c", URL)):
            await _start(backend, run_id, url)
        await backend.end_run("wfr_b", RunState.RUN_CANCELED, T0)

        async def found(query: RunQuery) -> list[str]:
            return sorted(run.run_id for run in await backend.find_runs(query))

        assert await found(RunQuery()) == ["wfr_a", "wfr_c"]
        assert await found(RunQuery(run_ids=["wfr_b", "wfr_c"])) == ["wfr_c"]
        assert await found(RunQuery(url=URL)) == ["wfr_a", "wfr_c"]
        assert await found(RunQuery(url=URL, url_exact=True)) == ["wfr_c"]
        assert len(await found(RunQuery(url=URL, count=1))) == 1
    finally:
        await backend.close()


async def test_a_failing_settlement_fails_the_run_once(backend: Backend) -> None:
    try:
        await _start(backend, "wfr_f")
        await backend.accept_run_messages(
            [_message("f1", "wfr_f"), _message("f2", "wfr_f")], [], T0, 0, []
        )
        leases = {lease.message.id: lease for lease in await backend.lease(T0, 10, 60_000)}
        for message_id in ("f1", "f2"):
            lease = leases[message_id]
            callback = _message(f"cb_{message_id}", "wfr_f", "failureCall")
            failed = Settlement(
                state=MessageState.FAILED,
                retried=0,
                next_due=None,
                events=[Event.of(lease.message, MessageState.FAILED, T0)],
                follow_ups=[callback],
                dlq=DlqEntry(f"dlq_{message_id}", lease.message, T0, 500, [], b""),
                fails_run="wfr_f",
            )
            assert await backend.settle(lease, failed, T0 + 1)
        run = await backend.get_run("wfr_f")
        assert run is not None and run.state is RunState.RUN_FAILED and run.dlq_id == "dlq_f1"
        assert await backend.get_message("cb_f1") is not None
        assert await backend.get_message("cb_f2") is None  # one failure callback per run
    finally:
        await backend.close()
