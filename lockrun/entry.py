"""The console script: ``lockrun.cli.main`` with the cyclic GC held off during start-up
(see lockrun.startup)."""

from __future__ import annotations

from lockrun.startup import freeze_start_up, hold_gc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> NoReturn:
    hold_gc()
    try:
        from lockrun.cli import main as cli_main

        cli_main()
    finally:
        freeze_start_up()
