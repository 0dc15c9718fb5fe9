"""Option helpers shared by the wrapper and the admin verbs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lockrun.configfile import FileSettings
from lockrun.errors import UsageError


def duration(minimum: float = 0.0, maximum: float | None = None, positive: bool = False,
              why: str = "") -> dict[str, Any]:
    """A DURATION option whose range is checked where the value's source is still known.

    Every duration has a maximum (MAX_DURATION unless *maximum* is tighter), so
    no value can overflow a Redis expiry or a timer later, after a claim.
    """
    from lockrun.durations import MAX_DURATION

    cap = MAX_DURATION if maximum is None else min(maximum, MAX_DURATION)

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
        if value is None:
            return None
        from lockrun.durations import format_duration, parse_duration

        if isinstance(value, (float, bool)):
            # only the configuration file can hand over a non-string; 1e16 must not pass
            raise click.BadParameter("must be a string such as \"90s\" or a whole number of "
                                     "seconds", ctx, param)
        try:
            seconds = parse_duration(str(value))
        except UsageError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
        if positive and seconds <= 0:
            raise click.BadParameter("must be greater than 0", ctx, param)
        if seconds < minimum:
            raise click.BadParameter(f"must be at least {format_duration(minimum)}{why}", ctx,
                                     param)
        if seconds > cap:
            raise click.BadParameter(f"must be at most {format_duration(cap)}", ctx, param)
        return seconds

    return {"callback": convert, "metavar": "DURATION"}


class PlainInt(click.IntRange):
    """A whole number in a range, in ASCII digits only.

    click's IntRange uses int(), which also takes '٣' (an Arabic-Indic three),
    ' 3', '3\n' and '1_0': input that should be refused, not guessed at.
    """

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,6}", value, re.ASCII):
            from lockrun.durations import shown

            self.fail(f"{shown(value)} is not a number from {self.min} to {self.max}",
                      param, ctx)
        return super().convert(value, param, ctx)


def name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A key or fire id: the characters that are safe inside a Redis key name."""
    if value is None:
        return None
    from lockrun.fire import validate_name

    try:
        return validate_name(value, "value")
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid value "), ctx, param) from None


def env(name: str) -> dict[str, Any]:
    return {"envvar": f"LOCKRUN_{name}", "show_envvar": True}


def password(settings: FileSettings | None) -> str | None:
    """From the environment or the file, never from argv where ps(1) shows it to everyone."""
    from_env = os.environ.get("LOCKRUN_REDIS_PASSWORD")
    if from_env:
        return from_env
    value = settings.values.get("redis_password") if settings else None
    return str(value) if value is not None else None


def http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http(s) URL with a host: a ping that can never arrive must not pass for one."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    from lockrun.output import redact_url

    problem = ""
    if re.search(r"[\x00-\x20\x7f]", value):
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
    if problem:
        from lockrun.durations import shown

        raise click.BadParameter(f"{shown(redact_url(value), 80)} {problem}", ctx, param)
    return value


def writable_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checked up front: a metrics file that silently never appears helps no one."""
    if value is None:
        return None
    from lockrun.durations import shown

    if not os.path.isdir(value):
        raise click.BadParameter(f"{shown(value, 200)}: no such directory", ctx, param)
    if not os.access(value, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{shown(value, 200)}: not writable", ctx, param)
    return value


def state_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An absolute path or '' (off); it need not exist: lockrun creates it when it must.

    Not checked for writability here: a state directory that cannot be used
    must never change an exit status, only make lockrun report every failure.
    """
    if value is None or value == "":
        return value
    from lockrun.durations import shown

    if not value.startswith("/") or "\0" in value:
        raise click.BadParameter(f"{shown(value, 200)}: give an absolute path, or '' to keep "
                                 "no state", ctx, param)
    return value


def readable_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A regular file: a FIFO or a device would block or feed the TLS library garbage."""
    if value is None:
        return None
    import stat

    from lockrun.durations import shown

    try:
        regular = stat.S_ISREG(os.stat(value).st_mode)
    except (OSError, ValueError):
        regular = False
    if not regular or not os.access(value, os.R_OK):
        raise click.BadParameter(f"{shown(value, 200)}: not a readable file", ctx, param)
    return value


def redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checked before anything connects; the message shows the URL with its password hidden."""
    if value is None:
        return None
    from lockrun.redisurl import normalise

    try:
        return normalise(value) if isinstance(value, str) else normalise(str(value))
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def tls_files(options: dict[str, Any]) -> Any:
    """TlsFiles from --redis-ca/--redis-cert/--redis-key, checked against the URL's scheme."""
    ca, cert, key = options["redis_ca"], options["redis_cert"], options["redis_key"]
    if not (ca or cert or key):
        return None
    if not str(options["redis_url"]).startswith("rediss://"):
        raise UsageError("--redis-ca, --redis-cert and --redis-key need a rediss:// URL")
    if bool(cert) != bool(key):
        raise UsageError("--redis-cert and --redis-key go together")
    from lockrun.client import TlsFiles

    return TlsFiles(ca, cert, key)


def connection_options() -> list[Any]:
    """Where Redis is and how lockrun's keys are named: the wrapper's and the verbs'."""
    return [
        click.option("--redis-url", metavar="URL", default="redis://localhost:6379/0",
                     callback=redis_url, **env("REDIS_URL"),
                     help="redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
                          "URL.  [default: redis://localhost:6379/0]"),
        click.option("--redis-timeout", default="2s", **env("REDIS_TIMEOUT"),
                     **duration(positive=True, maximum=60.0),
                     help="Connect and reply timeout of every Redis call.  [default: 2s]"),
        *tls_options(),
        click.option("--key-prefix", callback=name, metavar="NAME", default="lockrun",
                     **env("KEY_PREFIX"),
                     help="First part of every Redis key lockrun writes.  [default: lockrun]"),
    ]


def tls_options() -> list[Any]:
    """The three TLS options, shared by the wrapper and the admin verbs."""
    return [
        click.option("--redis-ca", metavar="FILE", callback=readable_file, **env("REDIS_CA"),
                     help="CA certificate(s) that sign the Redis server's certificate "
                          "(rediss://); verification is always on."),
        click.option("--redis-cert", metavar="FILE", callback=readable_file,
                     **env("REDIS_CERT"), help="Client certificate for TLS client auth."),
        click.option("--redis-key", metavar="FILE", callback=readable_file, **env("REDIS_KEY"),
                     help="Private key of --redis-cert."),
    ]


F = TypeVar("F", bound=Callable[..., Any])


def apply(decorators: list[Any]) -> Callable[[F], F]:
    """Apply a list of click option decorators in the order they are listed."""

    def wrap(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return wrap


def bad_parameter(exc: click.BadParameter) -> str:
    """Name the flag or the environment variable the bad value actually came from."""
    param, ctx = exc.param, exc.ctx
    if isinstance(exc, click.MissingParameter):
        return exc.format_message()
    if param is None or param.name is None or ctx is None:
        return exc.format_message()
    source = ctx.get_parameter_source(param.name)
    if source is click.core.ParameterSource.ENVIRONMENT and isinstance(param, click.Option):
        where = str(param.envvar)
    elif source is click.core.ParameterSource.DEFAULT_MAP and isinstance(ctx.obj, FileSettings):
        where = f"{param.name} ({ctx.obj.where(param.name)})"
    else:
        where = "/".join(getattr(param, "opts", [param.name]))
    return f"invalid value for {where}: {exc.message}"
