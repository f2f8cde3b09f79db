"""The Emotion replica's batch waits for company only while other calls are in flight."""

from deployments.batch_wait import BatchWaitWhenBusy


def test_a_call_alone_goes_at_once_and_concurrent_calls_wait():
    timeouts: list[float] = []
    wait = BatchWaitWhenBusy(timeouts.append, wait_s=0.002)
    with wait.call():
        assert timeouts == [0.0]
        with wait.call():  # a second call while the first is in flight
            assert timeouts == [0.0, 0.002]
            assert wait.in_flight == 2
    assert wait.in_flight == 0
    with wait.call():  # idle again: no wait
        pass
    assert timeouts[-1] == 0.0


def test_a_failed_call_leaves_the_count_right():
    wait = BatchWaitWhenBusy(lambda _: None, wait_s=0.002)
    try:
        with wait.call():
            raise RuntimeError("forward pass failed")
    except RuntimeError:
        pass
    assert wait.in_flight == 0


def test_reconfigured_wait_applies_to_the_next_busy_call():
    timeouts: list[float] = []
    wait = BatchWaitWhenBusy(timeouts.append, wait_s=0.002)
    wait.wait_s = 0.01
    with wait.call(), wait.call():
        pass
    assert timeouts == [0.0, 0.01]
