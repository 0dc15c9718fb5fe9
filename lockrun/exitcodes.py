"""The exit-status contract, in one place (README and man page carry the same table)."""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses lockrun produces itself; any other status is the child's own."""

    OK = 0
    """Default for a skipped fire (``-E`` changes it): skipping is not a failure."""
    NEGATIVE = 1
    """Admin commands answer no: no record of the key, nothing to unlock, a doctor check failed."""
    USAGE = 64
    """EX_USAGE: bad option, bad environment variable, bad key or fire id."""
    SOFTWARE = 70
    """EX_SOFTWARE: a bug in lockrun itself (reported in one line)."""
    REDIS_UNAVAILABLE = 75
    """EX_TEMPFAIL: Redis could not be used (``--error-exit-code`` changes it)."""
    TIMEOUT = 124
    """As coreutils timeout(1): ``--timeout`` expired and the job was stopped."""
    NOT_EXECUTABLE = 126
    """As the shell: the command exists but cannot be executed."""
    NOT_FOUND = 127
    """As the shell: the command was not found."""
    SIGNAL_BASE = 128
    """A child killed by signal N gives 128+N, as in the shell."""


def from_wait_status(status: int) -> int:
    """Map a raw waitpid() status to the shell's convention."""
    import os

    if os.WIFSIGNALED(status):
        return ExitCode.SIGNAL_BASE + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)
