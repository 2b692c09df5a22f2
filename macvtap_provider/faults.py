"""Named pause points, for tests that interrupt a run at an exact step.

`MACVTAP_LAB_PAUSE_AT=<point>[:<seconds>]` in the environment of `pulumi up` makes the
provider wait at that point (default 120 s), saying so in its log, so that a test can kill
the run there: between a domain's define and its start, for instance. Unset, a pause
point costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

ENV = "MACVTAP_LAB_PAUSE_AT"
DOMAIN_DEFINED = "domain-defined"


def pause(point: str) -> None:
    setting = os.environ.get(ENV)
    if not setting:
        return
    name, _, seconds = setting.partition(":")
    if name != point:
        return
    wait = float(seconds or 120)
    log.warning("pausing %.0fs at %r (%s is set)", wait, point, ENV)
    time.sleep(wait)
