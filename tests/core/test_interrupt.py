"""SIGINT and SIGTERM as flags inside stop_on_signals()."""

import os
import signal

import pytest

from codemix.core import interrupt


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_first_signal_is_a_flag_the_second_stops(sig, code):
    with interrupt.stop_on_signals():
        assert interrupt.requested() is None
        os.kill(os.getpid(), sig)
        assert interrupt.requested() == sig.name  # nothing raised yet: work may finish
        with pytest.raises(interrupt.Interrupted) as e:
            interrupt.check()
        assert e.value.exit_code == code
        with pytest.raises(interrupt.Interrupted):
            os.kill(os.getpid(), sig)  # a second signal raises at once
    assert interrupt.requested() is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupted_is_a_keyboard_interrupt():
    assert issubclass(interrupt.Interrupted, KeyboardInterrupt)
