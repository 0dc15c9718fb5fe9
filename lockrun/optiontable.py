"""Every option of the wrapper, declared once, and what a set of their values becomes.

Why a table: the click command (help, errors, completion), the hot path's own
argv parser (lockrun.argv) and the configuration file's type checks all read
these entries, so an option cannot exist, default or convert differently in
one of them. Defaults of options that are Config fields are read from Config,
so they are written in one place. The converters are plain functions that
raise UsageError with the sentence click shows; lockrun.options wraps them
for click. Nothing here imports click: a cron fire must not pay for it.
"""

from __future__ import annotations

import os

from lockrun.config import Config
from lockrun.durations import MAX_DURATION, format_duration, parse_duration, shown
from lockrun.errors import UsageError
from lockrun.output import Reporter, Verbosity

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs its import on every fire: annotations only
    from collections.abc import Callable, Mapping
    from typing import Literal, TypeAlias

    from lockrun.redisurl import TlsFiles

    Value: TypeAlias = str | int | float | bool | None
    """What an option's value can be once converted (and what the file or click hands
    over)."""
    Kind: TypeAlias = Literal["duration", "whole", "choice", "flag", "string", "size"]
    Check: TypeAlias = Callable[[str], str]
    """A string option's validator: the value (perhaps normalised) or a UsageError."""


CAPTURE_MIN = 1024
"""--capture's smallest SIZE: a smaller tail holds too little of an error to read, and 0
(off) is a likelier typo than a choice (``off`` says it)."""
CAPTURE_MAX = 1024 * 1024
"""--capture's largest SIZE (1 MiB): the tail is written to Redis on every fire of the job
and kept for the retention (per attempt), and sent within one Redis timeout just before
the release; a job whose last megabyte does not say why it failed needs a log file."""


# Converters: the sentence of each UsageError is what click prints after
# "invalid value for --option:".

def to_duration(value: Value, minimum: float = 0.0, maximum: float | None = None,
                positive: bool = False, why: str = "") -> float | None:
    """A DURATION whose range is checked where the value's source is still known.

    Every duration has a maximum (MAX_DURATION unless *maximum* is tighter), so
    no value can overflow a Redis expiry or a timer later, after a claim.
    """
    if value is None:
        return None
    if isinstance(value, (float, bool)):
        # only the configuration file can hand over a non-string; 1e16 must not pass
        raise UsageError("must be a string such as \"90s\" or a whole number of seconds")
    seconds = parse_duration(str(value))
    cap = MAX_DURATION if maximum is None else min(maximum, MAX_DURATION)
    if positive and seconds <= 0:
        raise UsageError("must be greater than 0")
    if seconds < minimum:
        raise UsageError(f"must be at least {format_duration(minimum)}{why}")
    if seconds > cap:
        raise UsageError(f"must be at most {format_duration(cap)}")
    return seconds


def to_whole(value: Value, low: int, high: int) -> int:
    """A whole number in a range, in ASCII digits only.

    int() also takes '٣' (an Arabic-Indic three), ' 3', '3\\n' and '1_0': input
    that should be refused, not guessed at. The range sentence is click's own
    (IntRange), so its message did not change when this took over.
    """
    if isinstance(value, str):
        if not (0 < len(value) <= 6 and value.isascii() and value.isdigit()):
            raise UsageError(f"{shown(value)} is not a number from {low} to {high}")
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise UsageError(f"{value!r} is not a valid integer.")
    if not low <= number <= high:
        raise UsageError(f"{number} is not in the range {low}<=x<={high}.")
    return number


_SIZE_UNITS = {"k": 1024, "K": 1024, "m": 1024 * 1024, "M": 1024 * 1024}


def to_size(value: Value, minimum: int, maximum: int) -> int:
    """A SIZE in bytes: ``65536``, ``64k``, ``1m`` (k = 1024), or ``off`` (0, the default).

    ASCII digits only and at most 8 of them, for the reasons to_whole gives;
    ``off`` exists so that one line can turn off a size its configuration file
    sets, while ``0`` is refused as a typo, like any number below *minimum*.
    """
    if value == "off":
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        digits = value[:-1] if value[-1:] in _SIZE_UNITS else value
        if not (0 < len(digits) <= 8 and digits.isascii() and digits.isdigit()):
            raise UsageError(f"invalid size {shown(value)}: expected a whole number of bytes "
                             "with an optional unit k or m (1024 and 1048576 bytes), for "
                             "example 64k, or off")
        number = int(digits) * _SIZE_UNITS.get(value[-1], 1)
    else:
        raise UsageError("must be a string such as \"64k\" or a whole number of bytes")
    if number < minimum:
        raise UsageError(f"must be at least {format_size(minimum)} (or off)")
    if number > maximum:
        raise UsageError(f"must be at most {format_size(maximum)}")
    return number


def format_size(size: int) -> str:
    """Bytes in the largest unit that divides them exactly; 0 is off."""
    for unit, factor in (("m", 1024 * 1024), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size) if size else "off"


BOOL_STATES = {"1": True, "0": False, "yes": True, "no": False, "true": True, "false": False,
               "on": True, "off": False, "t": True, "f": False, "y": True, "n": False}
"""click's BoolParamType.bool_states: how a flag's environment variable is read."""


def to_flag(value: str) -> bool | None:
    """A flag's environment value as click reads it; None for a word click refuses."""
    return BOOL_STATES.get(value.strip().lower())


def name(value: str) -> str:
    """A key or fire id: the characters that are safe inside a Redis key name."""
    from lockrun.fire import validate_name

    try:
        return validate_name(value, "value")
    except UsageError as exc:
        raise UsageError(str(exc).removeprefix("invalid value ")) from None


def http_url(value: str) -> str:
    """An http(s) URL with a host: a ping that can never arrive must not pass for one."""
    from lockrun.output import redact_url

    problem = _http_url_problem(value)
    if problem:
        raise UsageError(f"{shown(redact_url(value), 80)} {problem}")
    return value


def secret_http_url(value: str) -> str:
    """http_url for a URL whose path is a secret (a Slack webhook's is): the message shows
    only its scheme and host, as every later message about it does."""
    problem = _http_url_problem(value)
    if problem:
        raise UsageError(f"{shown(hide_url_path(value), 80)} {problem}")
    return value


def hide_url_path(url: str) -> str:
    """SCHEME://HOST/...: no user name, password, path, query or fragment.

    A webhook's path or query is its credential, and a notify URL may carry a
    user and password too, so a message names only where it goes.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(url)"
    host = rest
    for end in "/?#":
        host = host.split(end, 1)[0]
    if "@" in rest[len(host):]:  # a password with a '/' in it: where the host is, is unclear
        return f"{scheme}://***/..."
    return f"{scheme}://{host.rpartition('@')[2]}/..."


def _http_url_problem(value: str) -> str:
    """What is wrong with *value* as an http(s) URL, in words that do not repeat it."""
    from urllib.parse import urlsplit

    problem = ""
    if any(c <= " " or c == "\x7f" for c in value):
        problem = "contains a space or a control character"
    else:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
        except ValueError:
            problem = "has an invalid host or port"
        else:
            if parts.scheme.lower() not in ("http", "https") or "://" not in value:
                problem = "must be an http:// or https:// URL"
            elif not parts.hostname:
                problem = "has no host"
    return problem


NOTIFY_EVENTS = ("failure", "timeout", "lost", "retries-exhausted", "recovery", "ran-nowhere",
                 "retry", "success")
"""The words of --notify-on; kept here, not in lockrun.notify, so checking the option on
every fire costs no import of the sender."""
FINAL_FAILURES = ("timeout", "lost", "retries-exhausted")
"""The events --notify-on failure also selects: every way a fire can end failed."""


def notify_events(value: str) -> str:
    """--notify-on: known words, comma-separated, normalised to "a,b" (no spaces, no repeats).

    Checked on every fire, before Redis, so a typo is a usage error on the first fire
    rather than a notification that silently never comes.
    """
    words: list[str] = []
    for word in value.split(","):
        word = word.strip()
        if word not in NOTIFY_EVENTS:
            said = f"unknown event {shown(word)}" if word else "an empty event"
            raise UsageError(f"{said}: give a comma-separated list of {', '.join(NOTIFY_EVENTS)}")
        if word not in words:
            words.append(word)
    return ",".join(words)


def shell_command(value: str) -> str:
    """--notify-cmd: a /bin/sh -c line. The message never repeats it: it may hold a token."""
    if not value.strip():
        raise UsageError("is empty: give a command for /bin/sh -c")
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise UsageError("contains a control character (a newline or NUL included): give "
                         "one line for /bin/sh -c")
    return value


def exit_codes(value: str) -> str:
    """Exit statuses as '1,2,75-78': each from 1 to 255, ranges low-high."""
    parts = value.split(",")
    for part in parts:
        low, dash, high = part.partition("-")
        ok = all(0 < len(n) <= 3 and n.isascii() and n.isdigit() and 1 <= int(n) <= 255
                 for n in ((low, high) if dash else (low,)))
        if not ok or (dash and int(low) > int(high)):
            raise UsageError(f"{shown(value, 80)}: give exit statuses from 1 to 255, separated "
                             "by commas, with ranges as low-high (for example 1,75-78)")
    return ",".join(parts)


def writable_dir(value: str) -> str:
    """Checked up front: a metrics file that silently never appears helps no one."""
    if not os.path.isdir(value):
        raise UsageError(f"{shown(value, 200)}: no such directory")
    if not os.access(value, os.W_OK | os.X_OK):
        raise UsageError(f"{shown(value, 200)}: not writable")
    return value


def state_dir(value: str) -> str:
    """An absolute path or '' (off); it need not exist: lockrun creates it when it must.

    Not checked for writability here: a state directory that cannot be used
    must never change an exit status, only make lockrun report every failure.
    """
    if value != "" and (not value.startswith("/") or "\0" in value):
        raise UsageError(f"{shown(value, 200)}: give an absolute path, or '' to keep no state")
    return value


def readable_file(value: str) -> str:
    """A regular file: a FIFO or a device would block or feed the TLS library garbage."""
    import stat

    try:
        regular = stat.S_ISREG(os.stat(value).st_mode)
    except (OSError, ValueError):
        regular = False
    if not regular or not os.access(value, os.R_OK):
        raise UsageError(f"{shown(value, 200)}: not a readable file")
    return value


def redis_url(value: str) -> str:
    """Checked before anything connects; the message shows the URL with its password hidden."""
    from lockrun.redisurl import normalise

    return normalise(value)


# The table.

_CONFIG_DEFAULTS: Mapping[str, Value] = {
    name: value for name, value in Config.defaults().items()
    if value is None or isinstance(value, (str, int, float, bool))}


class Option:
    """One option: its spellings, its kind and range, where else it may come from.

    A plain class, not a dataclass: the table is built on every fire, and
    generating a dataclass's methods costs more than the whole table.
    """

    __slots__ = ("check", "choices", "default", "env", "flags", "help", "high", "kind", "low",
                 "maximum", "metavar", "minimum", "name", "positive", "required", "why")

    def __init__(self, name: str, flags: tuple[str, ...], kind: Kind, help: str, *,
                 metavar: str | None = None, env: str | None = None, default: Value = None,
                 required: bool = False, choices: tuple[str, ...] = (), minimum: float = 0.0,
                 maximum: float | None = None, positive: bool = False, why: str = "",
                 low: int = 0, high: int = 0, check: Check | None = None) -> None:
        self.name = name
        """The Python name: click's parameter name, Config's field, the file's setting."""
        self.flags = flags
        self.kind = kind
        self.help = help
        self.metavar = metavar
        self.env = env
        """LOCKRUN_* variable (shown in --help); None: only from the command line (or file)."""
        self.default = default
        """Only for options that are not Config fields: those take Config's default."""
        self.required = required
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.positive = positive
        self.why = why
        """Said after a duration's "must be at least": why the minimum exists."""
        self.low = low
        self.high = high
        self.check = check

    def __repr__(self) -> str:
        return f"Option({self.name!r})"

    @property
    def value_default(self) -> Value:
        """The converted default: Config's for a Config field, else the table's."""
        return _CONFIG_DEFAULTS.get(self.name, self.default)

    @property
    def click_default(self) -> Value:
        """The default as a user would write it: click converts it like any other value."""
        value = self.value_default
        if self.kind == "duration" and isinstance(value, float):
            return format_duration(value)
        if self.kind == "size" and isinstance(value, int):
            return format_size(value)
        return value

    def convert(self, value: Value) -> Value:
        """The one conversion of this option's value, wherever the value came from."""
        if value is None:
            return None
        if self.kind == "duration":
            return to_duration(value, self.minimum, self.maximum, self.positive, self.why)
        if self.kind == "whole":
            return to_whole(value, self.low, self.high)
        if self.kind == "size":
            return to_size(value, self.low, self.high)
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise UsageError(f"{value!r} is not a valid boolean.")
            return value
        if not isinstance(value, str):
            raise UsageError(f"{value!r} is not a string.")
        if self.kind == "choice" and value not in self.choices:
            raise UsageError(f"{value!r} is not one of {', '.join(map(repr, self.choices))}.")
        return self.check(value) if self.check is not None else value


def _env(suffix: str) -> str:
    return f"LOCKRUN_{suffix}"


def _duration(name: str, help: str, *, minimum: float = 0.0, maximum: float | None = None,
              positive: bool = False, why: str = "", flags: tuple[str, ...] = ()) -> Option:
    return Option(name, flags or (f"--{name.replace('_', '-')}",), "duration", help,
                  metavar="DURATION", env=_env(name.upper()), minimum=minimum, maximum=maximum,
                  positive=positive, why=why)


def _choice(name: str, choices: tuple[str, ...], help: str) -> Option:
    return Option(name, (f"--{name.replace('_', '-')}",), "choice", help,
                  env=_env(name.upper()), choices=choices)


def _flag(name: str, help: str, short: str | None = None) -> Option:
    flags = (f"--{name.replace('_', '-')}",)
    return Option(name, (short, *flags) if short else flags, "flag", help,
                  env=_env(name.upper()), default=False)


def _string(name: str, metavar: str, help: str, check: Check | None = None,
            env: bool = True) -> Option:
    return Option(name, (f"--{name.replace('_', '-')}",), "string", help, metavar=metavar,
                  env=_env(name.upper()) if env else None, check=check)


def _exit_code(name: str, help: str, flags: tuple[str, ...] = ()) -> Option:
    return Option(name, flags or (f"--{name.replace('_', '-')}",), "whole", help, metavar="N",
                  env=_env(name.upper()), low=0, high=255)


CONNECTION: tuple[Option, ...] = (
    _string("redis_url", "URL", "redis://, rediss://, unix://, redis+sentinel:// or "
            "redis+cluster:// URL.  [default: redis://localhost:6379/0]", redis_url),
    _duration("redis_timeout", "Connect and reply timeout of every Redis call.  [default: 2s]",
              positive=True, maximum=60.0),
    _string("redis_ca", "FILE", "CA certificate(s) that sign the Redis server's certificate "
            "(rediss://); verification is always on.", readable_file),
    _string("redis_cert", "FILE", "Client certificate for TLS client auth.", readable_file),
    _string("redis_key", "FILE", "Private key of --redis-cert.", readable_file),
    _string("key_prefix", "NAME", "First part of every Redis key lockrun writes.  "
            "[default: lockrun]", name),
)
"""Where Redis is and how lockrun's keys are named: the wrapper's and every verb's."""

WRAPPER: tuple[Option, ...] = (
    Option("key", ("-k", "--key"), "string", "Job name: 1-200 of A-Z a-z 0-9 . _ - : (never "
           "read from the environment).", metavar="NAME", required=True, check=name),
    _duration("ttl", "Lease length; renewed every ttl/3 while the job runs.  [default: 60s]",
              minimum=1.0),
    *CONNECTION,
    _string("fire", "ID", "Fire id (default: the current UTC minute, e.g. "
            "2026-11-22T03:00:00Z).", name, env=False),
    _string("schedule", "EXPR", "The job's cron schedule (5 fields or @daily...): the fire id "
            "becomes the latest scheduled time, so late starts still agree."),
    _string("tz", "ZONE", "Time zone of --schedule.  [default: the one of $CRON_TZ, $TZ and "
            "the system's in which this tick is a scheduled time]"),
    _duration("grace", "With --schedule: skip (too-late) when started this long after the "
              "scheduled time.  [default: 60s]", positive=True),
    _duration("max_skew", "Warn when this server's clock differs from Redis's by more "
              "(0: never).  [default: 2s]"),
    _choice("overlap", ("skip", "allow", "replace"),
            "skip: skip while an earlier fire of this key still runs; allow: run anyway; "
            "replace: stop the earlier run, then run.  [default: skip]"),
    _duration("retention", "How long a finished fire's done record is kept (>= 2m).  "
              "[default: 24h]", minimum=120.0,
              why=": a shorter one lets a late server rerun a fire"),
    _choice("on_redis_error", ("fail", "skip", "run"), "fail: exit 75 without running; skip: "
            "exit with the skip code; run: run without a lock.  [default: fail]"),
    _choice("on_lost", ("warn", "kill"),
            "When the lease is lost mid-run: warn, or stop the job.  [default: warn]"),
    _duration("timeout", "Stop the job's whole process tree after this long; exit 124.",
              positive=True),
    _duration("warn_after", "Print one warning line (and record a 'slow' event, and ping "
              "URL/log with --ping-url) when the job has run this long; it keeps running.",
              positive=True),
    Option("retries", ("--retries",), "whole", "Run a failed fire up to N more times: a "
           "later tick of any server claims the retry when it is due, preferring servers "
           "that have not failed it (needs --schedule or --fire, and a crontab that ticks "
           "more often; or --retry-local).  [default: 0]", metavar="N",
           env=_env("RETRIES"), low=0, high=20),
    _duration("retry_delay", "Wait between a failed attempt and the next.  [default: 1m]",
              positive=True, maximum=86400.0),
    Option("retry_backoff", ("--retry-backoff",), "whole", "Multiply the delay by F after "
           "each failed attempt (a whole factor).  [default: 1]", metavar="F",
           env=_env("RETRY_BACKOFF"), low=1, high=10),
    _string("retry_on", "CODES", "Retry only these exit statuses (e.g. 1,75-78; 124 is "
            "--timeout).  [default: every failure]", exit_codes),
    _flag("retry_anywhere", "Let a server that failed the fire take its retry as soon as it "
          "is due (by default it waits one more delay for another server)."),
    _flag("retry_local", "Retry on this server, in place, while holding the lease."),
    _duration("kill_after", "Grace between SIGTERM and SIGKILL when lockrun stops the job.  "
              "[default: 10s]"),
    _exit_code("skip_exit_code", "Exit status when another server runs this fire.  "
               "[default: 0]", ("-E", "--skip-exit-code")),
    _exit_code("error_exit_code", "Exit status when Redis cannot be used.  [default: 75]"),
    _duration("jitter", "Random delay before acquiring; the fire id is fixed first.  "
              "[default: 0]", maximum=3600.0),
    Option("wait_replicas", ("--wait-replicas",), "whole", "After claiming, wait until N "
           "replicas have the claim (Redis WAIT); warn if fewer do.  [default: 0]",
           metavar="N", env=_env("WAIT_REPLICAS"), low=0, high=64),
    _duration("wait_timeout", "How long --wait-replicas waits.  [default: 1s]", positive=True),
    _flag("strict_replicas", "With --wait-replicas: give the claim back and exit 75 if too "
          "few replicas acknowledge it."),
    _string("ping_url", "URL", "Healthchecks-style pings from the server that runs the fire: "
            "URL/start, then URL on success or URL/<exit code> on failure.", http_url),
    _string("notify_url", "URL", "On the events of --notify-on, POST a JSON document (or a "
            "Slack message) here, from the server that ran the attempt.", secret_http_url),
    _choice("notify_format", ("json", "slack"), "Body of --notify-url: json (every field) or "
            "slack (an incoming webhook's {\"text\": ...}).  [default: json]"),
    _string("notify_cmd", "CMD", "On the events of --notify-on, run CMD with /bin/sh -c, the "
            "JSON document on stdin and LOCKRUN_EVENT, LOCKRUN_EXIT... set.", shell_command),
    _string("notify_on", "EVENTS", "Comma-separated events to notify: failure (every final "
            "failure), timeout, lost, retries-exhausted, recovery, ran-nowhere, retry, success.  "
            "[default: failure,recovery]", notify_events),
    _string("metrics_dir", "DIR", "Write a Prometheus textfile (lockrun_<key>.prom) here on "
            "every fire.", writable_dir),
    _string("state_dir", "DIR", "Where this user's lockrun state lives on this server "
            "(outages, job ends to record later); '' turns it off.  [default: /var/lib/lockrun "
            "for root, else ~/.local/state/lockrun or /var/tmp/lockrun-UID]", state_dir),
    Option("log_format", ("--log-format",), "choice", "Messages as text lines or JSON "
           "objects.  [default: text]", env=_env("LOG_FORMAT"), choices=("text", "json"),
           default="text"),
    Option("capture", ("--capture",), "size", "Keep the last SIZE bytes of the job's stdout "
           "and stderr (e.g. 64k; at most 1m) with the fire in Redis, for 'lockrun logs', and "
           "send them with the final ping; the output still goes where it went, but through "
           "pipes: it is then not a terminal.  [default: off]", metavar="SIZE",
           env=_env("CAPTURE"), low=CAPTURE_MIN, high=CAPTURE_MAX),
    _flag("quiet_unless_failed", "Keep the job's stdout and stderr in memory and print them "
          "only if it fails (exit status not 0), as chronic does: cron mails failures only. "
          "The job's output is then not a terminal."),
    _flag("mail_on_failure", "When the job fails (exit status not 0), print one line on "
          "stderr, so cron mails it even if the job printed nothing."),
    _flag("syslog", "Also send every message, decisions included, to syslog (facility cron)."),
    _flag("verbose", "One line per decision on stderr (acquired, skipped and why).", "-v"),
    _flag("quiet", "No warnings; errors are still printed.", "-q"),
)
"""The wrapper's options in --help order."""

BY_NAME: Mapping[str, Option] = {o.name: o for o in WRAPPER}
CONFIG_FIELDS = tuple(name for name in Config.field_names() if name in BY_NAME
                      and name not in ("key", "fire"))
"""The options whose value Config takes as it is (the key is required, and the fire is
derived with --schedule)."""
KIND_TYPES: Mapping[Kind, type] = {"duration": float, "whole": int, "flag": bool,
                                   "choice": str, "string": str, "size": int}
"""What Option.convert returns for each kind: tests/test_argv.py checks these against
Config's annotations, which mypy cannot see through a mapping of values by name."""
_by_name: Callable[..., Config] = Config


# What a set of values becomes.

class Invocation:
    """One crontab line, parsed: the fire's settings and how to report."""

    __slots__ = ("config", "json_lines", "syslog")

    def __init__(self, config: Config, json_lines: bool, syslog: bool) -> None:
        self.config = config
        self.json_lines = json_lines
        self.syslog = syslog

    def __eq__(self, other: object) -> bool:
        """Two parsers of one line agree when this is True (tests/test_argv.py)."""
        return isinstance(other, Invocation) and (
            (self.config, self.json_lines, self.syslog)
            == (other.config, other.json_lines, other.syslog))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Invocation({self.config!r}, json_lines={self.json_lines}, syslog={self.syslog})"

    def reporter(self) -> Reporter:
        out = Reporter(self.config.verbosity, json_lines=self.json_lines, syslog=self.syslog)
        out.context = {"key": self.config.key, "fire": self.config.fire}
        return out


def password(environ: Mapping[str, str], file_values: Mapping[str, Value]) -> str | None:
    """From the environment or the file, never from argv where ps(1) shows it to everyone."""
    from_env = environ.get("LOCKRUN_REDIS_PASSWORD")
    if from_env:
        return from_env
    value = file_values.get("redis_password")
    return str(value) if value is not None else None


def tls_files(options: Mapping[str, Value]) -> TlsFiles | None:
    """TlsFiles from --redis-ca/--redis-cert/--redis-key, checked against the URL's scheme."""
    ca, cert, key = options["redis_ca"], options["redis_cert"], options["redis_key"]
    if not (ca or cert or key):
        return None
    if not str(options["redis_url"]).startswith("rediss://"):
        raise UsageError("--redis-ca, --redis-cert and --redis-key need a rediss:// URL")
    if bool(cert) != bool(key):
        raise UsageError("--redis-cert and --redis-key go together")
    from lockrun.redisurl import TlsFiles

    return TlsFiles(_text(ca), _text(cert), _text(key))


def _text(value: Value) -> str | None:
    return None if value is None else str(value)


def invocation(values: Mapping[str, Value], command: tuple[str, ...], redis_password: str | None,
               now: float) -> Invocation:
    """The wrapper's rules across options, then the Config: one body for both parsers.

    *values* holds every option of WRAPPER by name, converted; *now* fixes the
    fire id (and the schedule's slot) so that two parses of one line agree.
    """
    if values["verbose"] and values["quiet"]:
        raise UsageError("--verbose and --quiet cannot be used together")
    slot = None
    schedule, fire = values["schedule"], values["fire"]
    if schedule is not None:
        if fire is not None:
            raise UsageError("--fire and --schedule cannot be used together: "
                             "--schedule derives the fire id")
        from lockrun.schedule import cron_zones, slot_of_tick, validate, zone_from

        if values["tz"] is not None:
            slot = validate(str(schedule), zone_from(str(values["tz"])), now)
        else:  # the zone cron used: CRON_TZ (cronie) or the system's (Debian's cron)
            slot = slot_of_tick(str(schedule), cron_zones(), now)
    _check_retries(values, slot is not None or fire is not None)
    verbosity = (Verbosity.VERBOSE if values["verbose"]
                 else Verbosity.QUIET if values["quiet"] else Verbosity.NORMAL)
    if not command:
        raise UsageError("no command given: use lockrun [OPTIONS] -- COMMAND [ARG]...")
    if slot is not None:
        fire_id = slot.fire_id
    elif fire is not None:
        fire_id = str(fire)
    else:
        from lockrun.fire import minute_fire

        fire_id = minute_fire(now)
    config = _by_name(key=str(values["key"]), fire=fire_id, command=command,
                      redis_password=redis_password, verbosity=verbosity, slot=slot,
                      tls=tls_files(values), **{n: values[n] for n in CONFIG_FIELDS})
    return Invocation(config, json_lines=values["log_format"] == "json",
                      syslog=bool(values["syslog"]))


def _check_retries(values: Mapping[str, Value], fixed_fire: bool) -> None:
    """Retry settings that could never retry are refused, not silently ignored."""
    retries = values["retries"]
    if not retries:
        for name in ("retry_on", "retry_anywhere", "retry_local"):
            if values[name]:
                flag = BY_NAME[name].flags[-1]
                raise UsageError(f"{flag} has no effect without --retries N")
        return
    if values["retry_local"] and values["retry_anywhere"]:
        raise UsageError("--retry-local retries on this server only: --retry-anywhere "
                         "cannot be used with it")
    if not values["retry_local"] and not fixed_fire:
        raise UsageError("--retries needs --schedule or --fire: a retry is claimed by a later "
                         "tick of the same fire, and without them each tick is a new fire "
                         "(or use --retry-local to retry on this server)")
    delay = values["retry_delay"]
    grace = values["grace"]
    if (values["schedule"] is not None and isinstance(delay, float)
            and isinstance(grace, float) and delay >= grace):
        raise UsageError(f"--retry-delay {format_duration(delay)} does not fit in --grace "
                         f"{format_duration(grace)}: no retry may start after the grace, so "
                         "the delay must be shorter")


def option_kinds() -> dict[str, str]:
    """Each wrapper option's kind by name: what lockrun.configfile checks a value's type
    against (the admin verbs' options are a subset of the wrapper's)."""
    return {option.name: option.kind for option in WRAPPER}
