"""Command-line flags built from the dataclasses of `lmplay.config`, shared by every command.

Each field of a section dataclass becomes `--name-with-dashes` (the underscore spelling
`--name_with_underscores` is accepted too, hidden from `--help`), typed from its annotation,
with its default and help text from the field; a field's `group` lists it under that title in
`--help`, and `action="append"` makes a repeatable flag (a tuple of its values). `--config FILE`
reads flag values from a JSON or TOML file first; flags on the command line override it (a
repeatable flag's command-line values are added to the file's list).

A config file is one flat object (TOML: top-level keys) whose keys are flag names without the
leading dashes, in either spelling: `{"batch-size": 8, "lr": 0.002, "amp": true}`. An unknown key
is refused with one line naming it. TOML needs Python 3.11+ or the `tomli` package.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmplay.errors import UsageError
from lmplay.strict_json import loads_unique

Sections = Mapping[str, type]


class DefaultOnceFormatter(argparse.HelpFormatter):
    """Adds `(default: X)` to a flag's help unless the help already says its default, or there
    is nothing to say (no default, an off switch, or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: {default})"


def build_parser(prog: str, description: str, sections: Sections) -> argparse.ArgumentParser:
    """A parser with `--config FILE` and one flag per field of each section dataclass."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=DefaultOnceFormatter
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="JSON or TOML file of flag values (keys: flag names); command-line flags win",
    )
    titled: dict[str, argparse._ArgumentGroup] = {}
    for section, section_class in sections.items():
        group = parser.add_argument_group(section) if len(sections) > 1 else parser
        for f in dataclasses.fields(section_class):
            title = f.metadata.get("group")
            if title is not None and title not in titled:
                titled[title] = parser.add_argument_group(title)
            _add_flag(titled[title] if title else group, section, f, section_class)
    return parser


def parse_flags(
    parser: argparse.ArgumentParser, sections: Sections, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, dict[str, dict[str, Any]]]:
    """Parsed arguments and each section's field values: the defaults, then `--config FILE`,
    then the command line. A bad config file raises `UsageError`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        parser.set_defaults(**config_file_values(known.config, sections))
    args = parser.parse_args(argv)
    values = {
        section: {f.name: _value(args, section, f) for f in dataclasses.fields(cls)}
        for section, cls in sections.items()
    }
    return args, values


def _value(args: argparse.Namespace, section: str, f: dataclasses.Field) -> Any:
    value = getattr(args, _dest(section, f))
    return tuple(value) if f.metadata.get("action") == "append" else value


def config_file_values(path: Path, sections: Sections) -> dict[str, Any]:
    """The file's values keyed by parser destination, each checked against its field's type."""
    raw = _read_config(path)
    table = _flag_table(sections)
    unknown = [key for key in raw if key.replace("_", "-") not in table]
    if unknown:
        raise UsageError(
            f"--config {path}: unknown keys {', '.join(map(repr, unknown))}; keys are flag "
            "names such as 'batch-size' (see --help)"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        flag = key.replace("_", "-")
        section, f, section_class = table[flag]
        dest = _dest(section, f)
        if dest in values:
            raise UsageError(f"--config {path}: '{flag}' is given twice (dashes and underscores)")
        values[dest] = _checked_value(value, f, section_class, f"--config {path}: '{flag}'")
    return values


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise UsageError(f"--config {path}: cannot read: {error.strerror or error}") from None
    if path.suffix.lower() == ".toml":
        doc = _parse_toml(text, path)
    else:
        doc = loads_unique(text, f"--config {path}")
    if not isinstance(doc, dict):
        raise UsageError(f"--config {path}: must be one object of flag names and values")
    return doc


def _parse_toml(text: bytes, path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError(
                f"--config {path}: TOML needs Python 3.11+ or `pip install tomli`; "
                "or write the file as JSON"
            ) from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: not valid TOML: {error}") from None


def _flag_table(sections: Sections) -> dict[str, tuple[str, dataclasses.Field, type]]:
    return {
        _flag_name(f): (section, f, cls)
        for section, cls in sections.items()
        for f in dataclasses.fields(cls)
    }


def _checked_value(value: Any, f: dataclasses.Field, section_class: type, where: str) -> Any:
    """A config-file value as the flag would have parsed it; `UsageError` when it cannot be."""
    hint = typing.get_type_hints(section_class)[f.name]
    kind = _base_type(hint)
    if value is None and _optional(hint):
        return None
    if f.metadata.get("action") == "append":  # a repeatable flag: a list in a file
        if not isinstance(value, list):
            raise UsageError(f"{where} must be a list of values, got {value!r}")
        return [_checked_one(item, kind, f, where) for item in value]
    count = f.metadata.get("nargs")
    if count is not None:  # a fixed number of values, e.g. `--compare A B`: a list in a file
        if not isinstance(value, list) or len(value) != count:
            raise UsageError(f"{where} must be a list of {count} values, got {value!r}")
        return [_checked_one(item, kind, f, where) for item in value]
    return _checked_one(value, kind, f, where)


def _checked_one(value: Any, kind: type, f: dataclasses.Field, where: str) -> Any:
    wrong = isinstance(value, bool) != (kind is bool)
    if kind is float and isinstance(value, int) and not wrong:
        value = float(value)
    if wrong or not isinstance(value, kind):
        raise UsageError(f"{where} must be {_KIND_NAMES[kind]}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number, got {value!r}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise UsageError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    return value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _add_flag(
    group: argparse._ActionsContainer, section: str, f: dataclasses.Field, section_class: type
) -> None:
    flag = "--" + _flag_name(f)
    underscored = "--" + f.name
    kind = _base_type(typing.get_type_hints(section_class)[f.name])
    dest = _dest(section, f)
    options: dict[str, Any] = {"dest": dest}
    if kind is bool:
        options.update(action="store_true")
    else:
        choices = f.metadata.get("choices")
        options.update(
            type=kind,
            # argparse appends to a copy of a list default
            default=list(f.default) if f.metadata.get("action") == "append" else f.default,
            choices=choices,
            # With choices and no metavar, --help lists them: `--out-type {png,svg,pdf}`.
            metavar=f.metadata.get("metavar", None if choices else f.name.upper()),
        )
        for key in ("nargs", "action"):
            if key in f.metadata:
                options[key] = f.metadata[key]
    group.add_argument(flag, help=f.metadata["help"], **options)
    if underscored != flag:  # the spelling older docs use; one entry in --help is enough
        group.add_argument(underscored, help=argparse.SUPPRESS, **options)


def _flag_name(f: dataclasses.Field) -> str:
    return f.name.replace("_", "-")


def _dest(section: str, f: dataclasses.Field) -> str:
    return f"{section}.{f.name}"


def _base_type(hint: object) -> type:
    """`int | None` -> int; `tuple[str, ...]` (a repeatable flag) -> str."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0]
    return hint  # type: ignore[return-value]


def _optional(hint: object) -> bool:
    return type(None) in typing.get_args(hint)
