"""click's side of the option table (lockrun.optiontable), shared by the wrapper and the
admin verbs: the table's converters as click callbacks and types, and its entries as
click options."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lockrun import optiontable
from lockrun.configfile import FileSettings
from lockrun.errors import UsageError
from lockrun.optiontable import CONNECTION, Option, to_duration, to_size, to_whole

F = TypeVar("F", bound=Callable[..., Any])


def _adapt(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A converter of lockrun.optiontable as a click callback: its UsageError becomes
    click's BadParameter, so main() names the flag, variable or file line it came from."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def duration(minimum: float = 0.0, maximum: float | None = None, positive: bool = False,
              why: str = "") -> dict[str, Any]:
    """click's arguments of a DURATION option (lockrun.optiontable.to_duration)."""
    return {"callback": _adapt(lambda v: to_duration(v, minimum, maximum, positive, why)),
            "metavar": "DURATION"}


class PlainInt(click.IntRange):
    """A whole number in a range, in ASCII digits only (lockrun.optiontable.to_whole).

    An IntRange still, so the configuration file knows it takes an integer.
    """

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low, high)
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        try:
            return to_whole(value, self.low, self.high)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


name = _adapt(optiontable.name)
http_url = _adapt(optiontable.http_url)
writable_dir = _adapt(optiontable.writable_dir)
state_dir = _adapt(optiontable.state_dir)
readable_file = _adapt(optiontable.readable_file)
redis_url = _adapt(optiontable.redis_url)
tls_files = optiontable.tls_files


def env(name: str) -> dict[str, Any]:
    return {"envvar": f"LOCKRUN_{name}", "show_envvar": True}


def password(settings: FileSettings | None) -> str | None:
    """From the environment or the file, never from argv where ps(1) shows it to everyone."""
    return optiontable.password(os.environ, settings.values if settings else {})


def click_option(option: Option) -> Callable[[F], F]:
    """The click option of a table entry: what --help shows and how click converts it."""
    extra: dict[str, Any] = {}
    if option.env is not None:
        extra.update(envvar=option.env, show_envvar=True)
    if option.kind == "flag":
        extra.update(is_flag=True)
    elif option.kind == "choice":
        extra.update(type=click.Choice(list(option.choices)))
    elif option.kind == "whole":
        extra.update(type=PlainInt(option.low, option.high))
    elif option.kind == "duration":
        extra.update(duration(option.minimum, option.maximum, option.positive, option.why))
    elif option.kind == "size":
        low, high = option.low, option.high
        extra.update(callback=_adapt(lambda v: to_size(v, low, high)))
    elif option.check is not None:
        extra.update(callback=_adapt(option.check))
    if option.metavar is not None:
        extra.update(metavar=option.metavar)
    if option.required:
        extra.update(required=True)
    else:
        extra.update(default=option.click_default)
    decorator: Callable[[F], F] = click.option(*option.flags, option.name, help=option.help,
                                               **extra)
    return decorator


def connection_options() -> list[Any]:
    """Where Redis is and how lockrun's keys are named: the wrapper's and the verbs'."""
    return [click_option(o) for o in CONNECTION]


def tls_options() -> list[Any]:
    """The three TLS options, shared by the wrapper and the admin verbs."""
    return [click_option(o) for o in CONNECTION if o.name in ("redis_ca", "redis_cert",
                                                              "redis_key")]


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
