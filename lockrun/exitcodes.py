"""The exit-status contract, in one place (README and man page carry the same table).

A class of int constants rather than an IntEnum: the enum module costs about
3 ms of CPU to import, a third of what a skipped fire may cost in all, and a
status is only ever compared and passed to sys.exit. ``members()`` lists them
for the documentation tests.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class ExitCode:
    """Exit statuses lockrun produces itself; any other status is the child's own."""

    OK: Final = 0
    """Default for a skipped fire (``-E`` changes it): skipping is not a failure."""
    NEGATIVE: Final = 1
    """Admin commands answer no: no record of the key, nothing to unlock, a doctor check failed."""
    USAGE: Final = 64
    """EX_USAGE: bad option, bad environment variable, bad key or fire id."""
    SOFTWARE: Final = 70
    """EX_SOFTWARE: a bug in lockrun itself (reported in one line)."""
    REDIS_UNAVAILABLE: Final = 75
    """EX_TEMPFAIL: Redis could not be used (``--error-exit-code`` changes it)."""
    TIMEOUT: Final = 124
    """As coreutils timeout(1): ``--timeout`` expired and the job was stopped."""
    NOT_EXECUTABLE: Final = 126
    """As the shell: the command exists but cannot be executed."""
    NOT_FOUND: Final = 127
    """As the shell: the command was not found."""
    CANCELLED: Final = 143
    """128 + SIGTERM: the job was stopped by ``lockrun cancel`` or replaced by a newer fire
    (``--overlap replace``), whatever its own exit status."""
    SIGNAL_BASE: Final = 128
    """A child killed by signal N gives 128+N, as in the shell."""

    @classmethod
    def members(cls) -> dict[str, int]:
        """Every status by name, in the order declared above."""
        return {name: value for name, value in vars(cls).items()
                if name.isupper() and isinstance(value, int)}


def from_wait_status(status: int) -> int:
    """Map a raw waitpid() status to the shell's convention."""
    import os

    if os.WIFSIGNALED(status):
        return ExitCode.SIGNAL_BASE + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)
