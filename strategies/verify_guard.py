"""math-verify's verdict on two answers, with a hard cap on the CPU time it may take.

math-verify's own timeouts use `signal.alarm`, which raises outside the main thread (Gradio runs
handlers in worker threads), so they are switched off, and this module caps a comparison
instead: a trace hook stops it once this thread has used VERIFY_SECONDS of CPU time, in any
thread. strategies/answers.py keeps the inputs that could start unbounded symbolic work away
from it (`_too_costly`); this is the cap for what those rules miss.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from functools import lru_cache

from math_verify import parse, verify

logger = logging.getLogger(__name__)

VERIFY_SECONDS = 2.0  # CPU seconds one comparison may take; a longer one counts as unequal


@lru_cache(maxsize=4096)
def _parsed(s: str) -> tuple:
    # The box is the anchor math-verify trusts most; timeouts off (see the module docstring).
    return tuple(parse(f"\\boxed{{{s}}}", parsing_timeout=None))


class _Overtime(BaseException):
    """A comparison ran past VERIFY_SECONDS (a BaseException: math-verify catches Exception)."""


def _overtime_hook(seconds: float, armed: list) -> Callable:
    """A trace function that raises _Overtime at every Python call once this thread has used
    `seconds` more of CPU time, while `armed` is non-empty.

    Python unsets a hook that raises, and a finalizer may swallow what it raised (`Exception
    ignored in <generator ...>`), so the hook first installs itself in both slots (trace, and
    profile): one of them stays until the comparison gives up. It starts as a trace function
    only, which Python calls once per Python call (a profile function also sees every return
    and every call into C).
    """

    wall, cpu = time.monotonic() + seconds, time.thread_time() + seconds

    # a thread's CPU time grows no faster than the clock, and the clock is 10x cheaper to read
    def hook(frame, event, arg):
        if event == "call" and armed and time.monotonic() > wall and time.thread_time() > cpu:
            sys.settrace(hook)
            sys.setprofile(hook)
            raise _Overtime
        return None  # no per-line tracing

    return hook


@lru_cache(maxsize=16384)
def verified(a: str, b: str) -> bool:
    """math-verify's verdict, or False when it runs past VERIFY_SECONDS of this thread's CPU time
    (a hard cap for what `_too_costly` misses; CPU time, so a loaded machine does not change
    the verdict). The cap is a trace hook, which works in any thread; signal.alarm does not."""
    armed, previous = [True], (sys.getprofile(), sys.gettrace())
    sys.settrace(_overtime_hook(VERIFY_SECONDS, armed))
    try:
        equal = _verify_both(a, b)
    except _Overtime:
        equal = None
    finally:
        armed.clear()  # no Python call may run while the hook is armed: it would raise
        sys.setprofile(previous[0])
        sys.settrace(previous[1])
    if equal is None:
        logger.warning("math-verify gave up on %r vs %r after %s s", a, b, VERIFY_SECONDS)
    return bool(equal)


def _verify_both(a: str, b: str) -> bool:
    gold, target = list(_parsed(a)), list(_parsed(b))
    if not gold or not target:
        return False
    # verify(gold, target) is not symmetric (an interval `(3,4)` verifies against the set `4,3`
    # one way only); demanding both directions makes the relation symmetric and conservative.
    return verify(gold, target, timeout_seconds=None) and verify(target, gold, timeout_seconds=None)
