"""More of the workflow-run port, on every backend: racing appends, appends larger than one
DynamoDB transaction, large entries, the logs' listing and the DLQ's copy."""

from __future__ import annotations

import asyncio

import pytest

from relay.backends.base import Backend
from relay.workflows.model import RunLogQuery, RunState, WorkflowRun
from tests.conformance.test_runs_port import T0, URL, _message


@pytest.fixture
async def backend(backend: Backend) -> Backend:
    await backend.open()
    return backend


async def _start(
    backend: Backend,
    run_id: str,
    *,
    created_at: int = T0,
    url: str = URL,
    label: str | None = None,
    payload: bytes = b'{"n": 1}',
) -> None:
    init = _message(f"{run_id}_init", run_id, body=payload)
    run = WorkflowRun(
        run_id=run_id,
        url=url,
        created_at=created_at,
        message_id=init.id,
        payload=payload,
        label=label,
    )
    await backend.accept_run_messages([init], [], created_at, 0, [run])


@pytest.mark.parametrize("size", [0, 10_000], ids=["small", "large"])
async def test_racing_appends_get_distinct_ordered_indexes(backend: Backend, size: int) -> None:
    try:
        await _start(backend, "wfr_race")
        steps = [_message(f"r{i}", "wfr_race", body=f"r{i}".encode() * size) for i in range(8)]
        await asyncio.gather(
            *(backend.accept_run_messages([step], [], T0, 0, []) for step in steps)
        )
        entries = await backend.run_entries("wfr_race")
        assert [e.index for e in entries] == list(range(9))
        assert sorted(e.message_id for e in entries[1:]) == sorted(s.id for s in steps)
        bodies = {s.id: s.body for s in steps}
        assert all(e.body == bodies[e.message_id] for e in entries[1:])  # each its own body
        for entry in entries[1:]:
            stored = await backend.get_message(entry.message_id)
            assert stored is not None and stored.entry == entry.index
        run = await backend.get_run("wfr_race")
        assert run is not None and run.entries == 9
    finally:
        await backend.close()


async def test_an_append_of_many_steps_keeps_their_order(backend: Backend) -> None:
    try:
        await _start(backend, "wfr_many")
        steps = [_message(f"p{i:03d}", "wfr_many") for i in range(70)]
        answers = await backend.accept_run_messages(steps, [], T0, 0, [])
        assert [a.message_id for a in answers] == [s.id for s in steps]
        entries = await backend.run_entries("wfr_many")
        assert [(e.index, e.message_id) for e in entries[1:]] == [
            (i + 1, s.id) for i, s in enumerate(steps)
        ]
        run = await backend.get_run("wfr_many")
        assert run is not None and run.entries == 71
    finally:
        await backend.close()


async def test_large_payloads_and_entries_come_back_byte_exact(backend: Backend) -> None:
    try:
        payload = b'{"big": "' + b"x" * 20_000 + b'"}'
        await _start(backend, "wfr_big", payload=payload)
        body = bytes(range(256)) * 80
        await backend.accept_run_messages([_message("big1", "wfr_big", body=body)], [], T0, 0, [])
        run = await backend.get_run("wfr_big")
        assert run is not None and run.payload == payload
        entries = await backend.run_entries("wfr_big")
        assert [e.body for e in entries] == [payload, body]
    finally:
        await backend.close()


async def test_list_runs_newest_first_with_filters_and_cursor(backend: Backend) -> None:
    try:
        for i in range(5):
            await _start(
                backend,
                f"wfr_l{i}",
                created_at=T0 + i * 1000,
                url=URL + ("/even" if i % 2 == 0 else "/odd"),
                label="a,b" if i == 3 else None,
            )
        await backend.end_run("wfr_l1", RunState.RUN_SUCCESS, T0 + 9000, response='"r"')

        async def listed(**fields: object) -> list[str]:
            runs = await backend.list_runs(RunLogQuery(**fields))  # type: ignore[arg-type]
            return [run.run_id for run in runs]

        assert await listed() == [f"wfr_l{i}" for i in (4, 3, 2, 1, 0)]
        assert await listed(count=2) == ["wfr_l4", "wfr_l3"]
        assert await listed(before=(T0 + 3000, "wfr_l3"), count=2) == ["wfr_l2", "wfr_l1"]
        assert await listed(state="RUN_SUCCESS") == ["wfr_l1"]
        assert await listed(url=URL + "/even") == ["wfr_l4", "wfr_l2", "wfr_l0"]
        assert await listed(label="b") == ["wfr_l3"]
        assert await listed(run_id="wfr_l2") == ["wfr_l2"]
        assert await listed(created_at=T0 + 1000) == ["wfr_l1"]
        assert await listed(from_time=T0 + 1000, to_time=T0 + 3000) == [
            "wfr_l3",
            "wfr_l2",
            "wfr_l1",
        ]
        [ended] = await backend.list_runs(RunLogQuery(run_id="wfr_l1"))
        assert (ended.state, ended.response, ended.completed_at) == (
            RunState.RUN_SUCCESS,
            '"r"',
            T0 + 9000,
        )
        assert ended.payload == b'{"n": 1}'
    finally:
        await backend.close()


async def test_copy_run_takes_the_entries_up_to_an_index(backend: Backend) -> None:
    try:
        await _start(backend, "wfr_src")
        steps = [_message(f"c{i}", "wfr_src") for i in range(1, 4)]
        await backend.accept_run_messages(steps, [], T0, 0, [])
        copy = WorkflowRun(
            run_id="wfr_copy",
            url=URL,
            created_at=T0 + 5,
            message_id="copy_init",
            payload=b'{"n": 2}',
        )
        await backend.copy_run("wfr_src", copy, 2)
        run = await backend.get_run("wfr_copy")
        assert run is not None and run.state is RunState.RUN_STARTED and run.entries == 3
        entries = await backend.run_entries("wfr_copy")
        assert [(e.index, e.body) for e in entries] == [(0, b'{"n": 2}'), (1, b"c1"), (2, b"c2")]
        # the copy takes appends after its copied entries
        await backend.accept_run_messages([_message("c9", "wfr_copy")], [], T0, 0, [])
        stored = await backend.get_message("c9")
        assert stored is not None and stored.entry == 3
    finally:
        await backend.close()
