"""Lua scripts whose KEYS and ARGV are named once, for the Lua side and the Python side.

Positional slots drift: ARGV[2] meant the ttl in one script, the retention in
another and 0 in a third, and a caller that passed arguments in the wrong
order still ran. Here each script declares the names of its keys and
arguments; the Lua source starts with ``local name = KEYS[i]`` /
``local name = ARGV[i]`` lines generated from those names, and a call must
give exactly those names, by keyword. tests/test_units.py checks that every
declared name is used in the body and that the body uses no slot directly.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final


class Script:
    """One script: its named KEYS and ARGV, and the source sent to Redis."""

    __slots__ = ("args", "body", "keys", "source")

    def __init__(self, keys: tuple[str, ...], args: tuple[str, ...], body: str) -> None:
        self.keys: Final = keys
        """Lua names of KEYS[1..n], in order."""
        self.args: Final = args
        """Lua names of ARGV[1..n], in order."""
        self.body: Final = body
        prelude = [f"local {name} = KEYS[{i}]" for i, name in enumerate(keys, 1)]
        prelude += [f"local {name} = ARGV[{i}]" for i, name in enumerate(args, 1)]
        self.source: Final = "\n" + "\n".join(prelude) + body
        """What is sent to Redis (and hashed for EVALSHA): the generated prelude, then the
        body."""

    def __repr__(self) -> str:
        return f"Script(keys={self.keys}, args={self.args})"

    def bind(self, keys: Mapping[str, str], **args: str | int) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV in the script's order, from names; a missing or unknown name is a bug."""
        if set(keys) != set(self.keys) or set(args) != set(self.args):
            raise TypeError(f"script takes keys {self.keys} and args {self.args}, got "
                            f"{tuple(keys)} and {tuple(args)}")
        # plain ints: redis clients write an IntEnum as its repr ("<ExitCode...>")
        values = [int(v) if isinstance(v, int) else v for v in (args[n] for n in self.args)]
        return [keys[n] for n in self.keys], values
