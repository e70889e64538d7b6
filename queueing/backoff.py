"""How long to wait before trying again: one rule for image retries, webhook retries and polling after a failure.

A delay doubles with each failure, from ``base_s`` up to ``cap_s``. Retries that many clients make at
once are spread out with jitter: *full* jitter draws the whole wait at random below the doubled delay
(retries of one outage spread over the whole window), *proportional* jitter lengthens a delay chosen
elsewhere (a schedule) by up to a fraction of itself.
"""

from __future__ import annotations

import random

#: Doublings past this change nothing the callers' caps allow, and keep ``2 ** n`` a small number.
MAX_DOUBLINGS = 10


def exponential(failures: int, *, base_s: float, cap_s: float, jitter: bool = False) -> float:
    """``base_s`` doubled once per failure (at most ``MAX_DOUBLINGS`` times), capped at ``cap_s``.

    With ``jitter``, a uniform draw between 0 and that delay (full jitter).
    """
    delay_s = min(cap_s, base_s * 2 ** min(failures, MAX_DOUBLINGS))
    return random.uniform(0, delay_s) if jitter else delay_s


def jittered(delay_s: float, spread: float) -> float:
    """``delay_s`` lengthened by a uniform draw of up to ``spread`` of itself (0.1: up to 10% longer)."""
    return delay_s * (1 + random.uniform(0, spread))
