"""The job's program, found before any lock is taken, so a typo costs no fire.

Exit statuses follow the shell: 127 not found, 126 found but not executable.
A module of its own because every fire checks the command before it claims,
and the process machinery (lockrun.process) is only for the server that runs.
"""

from __future__ import annotations

import os

from lockrun.errors import CommandNotExecutable, CommandNotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def resolve_command(argv: Sequence[str], env: dict[str, str]) -> str:
    """Find the program before any lock is taken, so a typo costs no fire.

    Exit codes follow the shell: 127 not found, 126 found but not executable.
    """
    program = argv[0]
    if "/" in program:
        if not os.path.exists(program):
            raise CommandNotFound(f"{program}: command not found")
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise CommandNotExecutable(f"{program}: permission denied")
        _check_interpreter(program, program)
        return program
    found = _which(program, env.get("PATH", os.defpath), os.X_OK)
    if found is None:
        if _which(program, env.get("PATH", os.defpath), os.F_OK):
            raise CommandNotExecutable(f"{program}: permission denied")
        raise CommandNotFound(f"{program}: command not found")
    _check_interpreter(program, found)
    return found


def _which(program: str, path: str, mode: int) -> str | None:
    """shutil.which's search (first match on PATH, an empty entry is the current
    directory, directories skipped), without importing shutil on every fire."""
    if not path:
        return None  # as shutil.which: an empty PATH finds nothing
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, program)
        if os.access(candidate, mode) and not os.path.isdir(candidate):
            return candidate
    return None


def _check_interpreter(name: str, path: str) -> None:
    """A script whose ``#!`` interpreter is missing fails like a missing command (127).

    Found now, before the claim, it costs no fire; exec would find it only after
    the claim, when the fire must be given back. Only an absolute interpreter
    path is checked, as the kernel needs one; an unreadable script is left to exec.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    if not words or not words[0].startswith(b"/"):
        return
    interpreter = os.fsdecode(words[0])
    if not os.path.exists(interpreter):
        raise CommandNotFound(f"{name}: bad interpreter {interpreter}: no such file")
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        raise CommandNotExecutable(f"{name}: bad interpreter {interpreter}: permission denied")
