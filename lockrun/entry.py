"""The console script: ``lockrun.cli.main`` with the cyclic GC held off during start-up.

Why: most invocations live a fraction of a second (a skip). While redis-py and
click import, the cyclic GC runs again and again and finds nothing to free, and
at exit it walks the whole start-up heap once more. With it off until the job
is supervised, and that heap frozen (never scanned again), every fire is
cheaper; ``long_lived`` turns it back on for the hours a job may run.
"""

from __future__ import annotations

import gc
from typing import NoReturn


def main() -> NoReturn:
    gc.disable()
    try:
        from lockrun.cli import main as cli_main

        cli_main()
    finally:
        gc.freeze()  # the collection at interpreter exit then skips the start-up heap


def long_lived() -> None:
    """Before supervising a job: freeze what start-up built, collect from now on."""
    gc.freeze()
    gc.enable()
