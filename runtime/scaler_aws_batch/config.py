"""Settings declared once, the Scaler way.

Every setting of ``scaler-batch worker`` is one field of a settings dataclass (a Scaler 2.9
:class:`scaler.config.config_class.ConfigClass`). The field is the only place the setting is written down; from it
come the command-line flag, the environment variable, the key in the TOML config file, the default, the help text
and its row in docs/configuration.md. **Adding a setting is one field declaration**::

    max_parallel: int | None = setting(None, "job processes running at once", default_text="CPU count")

gives ``--max-parallel``, ``SCALER_BATCH_MAX_PARALLEL`` and the key ``max_parallel`` (or ``max-parallel``) in the
class's ``[section]`` of the file named by ``-c FILE.toml``. Then run ``python -m scaler_aws_batch.config_docs``
to refresh docs/configuration.md (a test fails while it is stale). Validate the value in the class's
``__post_init__`` and name where it came from with :func:`where`.

Names follow Scaler's ``ConfigClass``: the flag is ``--`` + the field name with hyphens (metadata ``long``
overrides it), the TOML key is the flag without ``--`` (hyphens and underscores alike), and a value is taken from,
first found wins: command line > environment > config file > (a backend's own extra source, e.g. AWS stack
outputs) > default. Unlike Scaler, an unknown key in a section this worker reads is an error, not ignored, so a
typo cannot silently fall back to a default; sections of other programs (``[scheduler]``) are left alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Union

from scaler.config.config_class import ConfigClass

ENV_PREFIX: Final = "SCALER_BATCH_"
#: The config file flag and variable (Scaler's ``-c`` / ``--config``), read before everything else.
CONFIG_FLAGS: Final = ("-c", "--config")
CONFIG_ENV: Final = ENV_PREFIX + "CONFIG"

__all__ = ["CONFIG_ENV", "CONFIG_FLAGS", "ConfigClass", "Settings", "setting"]


class Settings(ConfigClass):  # type: ignore[misc]  # Scaler ships no type information
    """Base of every settings dataclass. ``section`` is its table in the TOML file."""

    section: typing.ClassVar[str]


def setting(
    default: Any,
    help: str,
    *,
    long: str | None = None,
    default_text: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    stack_output: str | None = None,
) -> Any:
    """Declare one setting. ``default_text`` is how docs/configuration.md shows a default that is computed at run
    time (``None`` meaning "CPU count"); ``stack_output`` names the CDK output that fills it (AWS backend)."""
    metadata: dict[str, Any] = {"help": help}
    for key, value in (
        ("long", long),
        ("default_text", default_text),
        ("metavar", metavar),
        ("choices", choices),
        ("stack_output", stack_output),
    ):
        if value is not None:
            metadata[key] = value
    return dataclasses.field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------------- names


def flag(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("long", "--" + field.name.replace("_", "-")))


def env_var(field: dataclasses.Field[Any]) -> str:
    return ENV_PREFIX + flag(field).removeprefix("--").replace("-", "_").upper()


def file_key(field: dataclasses.Field[Any]) -> str:
    return flag(field).removeprefix("--").replace("-", "_")


def fields(cls: type[Settings]) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(field for field in dataclasses.fields(cls) if "help" in field.metadata)


def field_named(cls: type[Settings], name: str) -> dataclasses.Field[Any]:
    for field in fields(cls):
        if field.name == name:
            return field
    raise KeyError(name)


def where(cls: type[Settings], name: str) -> str:
    """How a user sets a field, for error messages: ``--flag / ENV_VAR``."""
    field = field_named(cls, name)
    return f"{flag(field)} / {env_var(field)}"


# ---------------------------------------------------------------------------------------------------- parsing


def is_repeatable(kind: Any) -> bool:
    """Repeatable settings are ``tuple[str, ...]`` (immutable, so a plain default works)."""
    return typing.get_origin(kind) is tuple


def add_arguments(cls: type[Settings], parser: argparse.ArgumentParser, title: str) -> None:
    """One flag per field, in its own group. Flags default to "absent" so the loader can apply precedence."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in fields(cls):
        options: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": field.metadata["help"]}
        options["metavar"] = field.metadata.get("metavar", file_key(field).upper())
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
            del options["metavar"]
        if is_repeatable(hints[field.name]):
            options["action"] = "append"
        if hints[field.name] is bool:  # a switch: present means true (false through env or the config file)
            options["action"] = "store_true"
            options.pop("metavar", None)
        try:
            group.add_argument(flag(field), **options)
        except argparse.ArgumentError:
            continue  # another backend declares the same flag (--work-dir): it sets the field of the backend in use


def read_config_file(path: str) -> dict[str, Any]:
    """The TOML file's tables. Errors say what to fix."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ValueError(f"config file {path!r} (-c) does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path!r} (-c) is not valid TOML: {exc}") from exc
    return data


def config_path(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    return getattr(args, "config", None) or env.get(CONFIG_ENV) or None


def file_section(data: Mapping[str, Any], cls: type[Settings], path: str = "") -> dict[str, Any]:
    """The class's table of a loaded config file, keys normalised to field names. Unknown keys are an error."""
    table = data.get(cls.section, {})
    if not isinstance(table, dict):
        raise ValueError(f"config file {path!r}: [{cls.section}] must be a table of settings")
    by_key = {file_key(field): field.name for field in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = by_key.get(key.replace("-", "_"))
        if name is None:
            raise ValueError(
                f"config file {path!r}: unknown key {key!r} in [{cls.section}]; known keys: {', '.join(sorted(by_key))}"
            )
        values[name] = value
    return values


def explicit_values(
    cls: type[Settings], args: argparse.Namespace, env: Mapping[str, str], from_file: Mapping[str, Any]
) -> dict[str, Any]:
    """Field values the user gave, converted to the fields' types: command line > environment > file."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in fields(cls):
        raw: Any
        if field.name in vars(args):
            raw, source = getattr(args, field.name), "flag"
        elif env.get(env_var(field), "") != "":
            raw, source = env[env_var(field)], "env"
        elif field.name in from_file:
            raw, source = from_file[field.name], "file"
        else:
            continue
        values[field.name] = convert(cls, field, hints[field.name], raw, source)
    return values


def load(
    cls: type[Settings],
    args: argparse.Namespace,
    env: Mapping[str, str],
    from_file: Mapping[str, Any],
    fallback: Mapping[str, Any] | None = None,
) -> Any:
    """An instance of ``cls``: explicit values over ``fallback`` over the declared defaults."""
    return cls(**{**(fallback or {}), **explicit_values(cls, args, env, from_file)})


def convert(cls: type[Settings], field: dataclasses.Field[Any], kind: Any, raw: Any, source: str) -> Any:
    """``raw`` (a flag string, an environment string or a TOML value) as the field's type; errors name the flag."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (Union, types.UnionType) and type(None) in args:
        (kind,) = (arg for arg in args if arg is not type(None))

    def bad(what: str) -> ValueError:
        return ValueError(f"{field.name} must be {what} ({where(cls, field.name)}), got {raw!r}")

    if is_repeatable(kind):
        if source == "env" and isinstance(raw, str):
            return tuple(shlex.split(raw))
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise bad("a list of strings")
        return tuple(raw)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.strip().lower() in ("true", "1", "yes")
        raise bad("true or false")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise bad("a whole number")
    if kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise bad("a number")
    if not isinstance(raw, str):
        raise bad("a string")
    value = raw.strip()
    choices = field.metadata.get("choices")
    if choices is not None and value not in choices:
        raise bad("one of " + ", ".join(choices))
    return value


# ---------------------------------------------------------------------------------------------------- checks


def check_whole(settings: Settings, name: str, *, minimum: int) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number ({where(type(settings), name)}), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} ({where(type(settings), name)}), got {value}")


def check_positive(settings: Settings, name: str, *, maximum: float | None = None, why: str = "") -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number ({where(type(settings), name)}), got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be greater than 0 ({where(type(settings), name)}), got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}{why} ({where(type(settings), name)}), got {value}")
