"""The cyclic garbage collector held off while lockrun starts, turned on for long jobs.

Why: most invocations live a fraction of a second (a skip). While redis-py and
click import, the cyclic GC runs again and again and finds nothing to free, and
at exit it walks the whole start-up heap once more. With it off until the job
is supervised, and that heap frozen (never scanned again), every fire is
cheaper; ``long_lived`` turns it back on for the hours a job may run.
"""

import gc


def hold_gc() -> None:
    """From the first instruction: no collection while the start-up heap is built."""
    gc.disable()


def freeze_start_up() -> None:
    """At exit: the collection at interpreter exit then skips the start-up heap."""
    gc.freeze()


def long_lived() -> None:
    """Before supervising a job: freeze what start-up built, collect from now on."""
    gc.freeze()
    gc.enable()
