"""One exception hierarchy; the CLI turns each into one stderr line and its exit code."""

from lockrun.exitcodes import ExitCode


class LockrunError(Exception):
    """Base class: the message is shown as ``lockrun: <message>``."""

    exit_code: int = 1


class UsageError(LockrunError):
    """The user's input is wrong; nothing was run and Redis was not touched."""

    exit_code: int = ExitCode.USAGE


class RedisUnavailable(LockrunError):
    """Redis could not be reached or refused the script.

    Its exit status is the default one; a fire exits with its own
    ``--error-exit-code`` instead (lockrun.runner), which the Redis client
    never needs to know.
    """

    exit_code: int = ExitCode.REDIS_UNAVAILABLE
    reply_lost: bool = False
    """The request was sent but no reply came: a script may have run all the same."""

    def __init__(self, message: str, reply_lost: bool = False) -> None:
        super().__init__(message)
        self.reply_lost = reply_lost


class NoRecord(LockrunError):
    """An admin command found nothing for what it was asked: a typo'd key or prefix
    must not look like a healthy job with no runs yet."""

    exit_code: int = ExitCode.NEGATIVE


class CommandNotFound(LockrunError):
    exit_code: int = ExitCode.NOT_FOUND


class CommandNotExecutable(LockrunError):
    exit_code: int = ExitCode.NOT_EXECUTABLE


class PossibleDuplicate(RedisUnavailable):
    """The end was written, but maybe not where the next server looks: said, not hidden.

    A RedisUnavailable, so a caller that only knows that one still reports it
    and still passes the job's exit status through.
    """
