import os
import signal

import pytest

from processing.uninterrupted import SOFT_LIMIT_SIGNAL, soft_limit_held


class Struck(Exception):
    pass


@pytest.fixture
def soft_limit_raises():
    def strike(signum, frame):
        raise Struck

    previous = signal.signal(SOFT_LIMIT_SIGNAL, strike)
    yield
    signal.signal(SOFT_LIMIT_SIGNAL, previous)


def test_a_soft_limit_that_passes_inside_strikes_once_the_block_is_over(soft_limit_raises):
    finished = []
    with pytest.raises(Struck), soft_limit_held():
        os.kill(os.getpid(), SOFT_LIMIT_SIGNAL)
        finished.extend(range(1000))
    assert len(finished) == 1000


def test_without_the_hold_the_soft_limit_strikes_at_once(soft_limit_raises):
    finished = []
    with pytest.raises(Struck):
        os.kill(os.getpid(), SOFT_LIMIT_SIGNAL)
        finished.extend(range(1000))
    assert finished == []


def test_the_hold_ends_with_the_block(soft_limit_raises):
    with soft_limit_held():
        pass
    with pytest.raises(Struck):
        os.kill(os.getpid(), SOFT_LIMIT_SIGNAL)
        signal.pthread_sigmask(signal.SIG_BLOCK, set())
