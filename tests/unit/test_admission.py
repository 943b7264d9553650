"""relay.admission: the one rule of queues and flow control, without a store."""

from __future__ import annotations

from relay.admission import KeyGate, QueueGate, Waiting, admit

NOW = 1_800_000_000_000


def test_a_queue_admits_its_head_up_to_its_parallelism() -> None:
    line = QueueGate(parallelism=2, held=1)
    waiting = [Waiting(f"m{i}", NOW, "q") for i in range(3)]
    result = admit(waiting, {"q": line}, {}, NOW)
    assert result.queued == result.started == ["m0"]
    assert line.held == 2 and result.wake_at is None


def test_a_head_not_due_holds_back_the_line() -> None:
    waiting = [Waiting("later", NOW + 500, "q"), Waiting("now", NOW, "q")]
    result = admit(waiting, {"q": QueueGate(parallelism=5)}, {}, NOW)
    assert result.started == [] and result.wake_at == NOW + 500


def test_paused_queue_and_missing_queue() -> None:
    paused = admit([Waiting("a", NOW, "p")], {"p": QueueGate(paused=True)}, {}, NOW)
    assert paused.started == [] and paused.wake_at is None
    default = admit([Waiting("a", NOW, "x"), Waiting("b", NOW, "x")], {}, {}, NOW)
    assert default.started == ["a"]  # a queue without settings: parallelism 1


def test_a_key_limits_calls_and_spends_rate_tokens() -> None:
    key = KeyGate(parallelism=3, rate=2, period=1000)
    waiting = [Waiting(f"m{i}", NOW, None, "k") for i in range(4)]
    result = admit(waiting, {}, {"k": key}, NOW)
    assert result.started == ["m0", "m1"] and result.wake_at == NOW + 1000
    assert (key.running, key.window_start, key.window_count) == (2, NOW, 2)
    assert key.rate_count(NOW + 999) == 2 and key.rate_count(NOW + 1000) == 0
    later = admit(waiting[2:], {}, {"k": key}, NOW + 1000)  # a new window
    assert later.started == ["m2"]  # the third call slot
    assert key.take(NOW + 1000) == 0  # parallelism: wait for a release


def test_queued_then_keyed() -> None:
    """A message in a queue with a key takes its queue slot, then waits for its key."""
    line, key = QueueGate(parallelism=2), KeyGate(parallelism=1, running=1)
    waiting = [Waiting("a", NOW, "q", "k"), Waiting("b", NOW, "q", "k")]
    result = admit(waiting, {"q": line}, {"k": key}, NOW)
    assert result.queued == ["a", "b"] and result.started == []
    assert line.held == 2


def test_a_paused_key_and_no_key() -> None:
    paused = KeyGate(paused=True)
    assert admit([Waiting("a", NOW, None, "k")], {}, {"k": paused}, NOW).started == []
    assert admit([Waiting("a", NOW, None, "free")], {}, {}, NOW).started == ["a"]
