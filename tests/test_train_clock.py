"""The loop's clocks: the checkpoint cadence by steps and by minutes."""

from __future__ import annotations

import time

from cnncli.train.clock import SaveTimer


def test_save_timer_by_steps_and_by_minutes(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    by_steps = SaveTimer(every_steps=10)
    assert [s for s in range(1, 31) if by_steps.due(s)] == [10, 20, 30]
    by_time = SaveTimer(every_seconds=90.0, last=now[0])
    assert not by_time.due(1)
    now[0] += 89.0
    assert not by_time.due(2)
    now[0] += 1.0
    assert by_time.due(3)
    by_time.reset()
    assert not by_time.due(4)
    assert not any(SaveTimer().due(s) for s in range(1, 100))  # neither set: never
