"""Config fields written once, and everything derived from them.

A stage's config is a dataclass whose every field is declared with `option(...)`: its type and
default (the annotation and the default), its help text, and tags for what the code derives
from it:

- `resume`: "fixed" (a resumed run must keep the value: SB3 restores it from the checkpoint, or
  the run would become another one) or "free" (a resume applies the new value);
- `variant`: runs that differ in it are different experiments, not repeats (`rpd report`'s
  groups); `teacher_only` marks the variant fields that act only through the teacher, so they
  do not split plain-PPO runs;
- `absent`: what a run written before the field existed trained with (its config.json lacks
  the key).

From the fields come the click options of the command (`click_options`: every field settable,
the help and the default shown by `--help` are the field's), the reading of config files (YAML
or JSON, `load_config`: an unknown key, a wrong type or a bad value is one line naming the key
and the file), the resume rules (`fields_where(cls, resume="fixed")`), the report groups and the
backfills of old runs (`absent_values`). Recipes (`recipe_path`, `list_recipes`) are config
files shipped in `rpd/recipes/`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from rpd.errors import InputError

RESERVED_KEYS = ("description", "command")
"""Keys a config file may hold beside the fields: what the recipe is for (`rpd recipes` prints
it) and the command that takes it ("train" or "run")."""
RECIPES_DIR = Path(__file__).parent / "recipes"


def option(default: Any = MISSING, *, help: str, cli: str | None = None,
           flag: str | None = None, resume: str = "fixed", variant: bool = False,
           teacher_only: bool = False, absent: Any = MISSING,
           choices: tuple[str, ...] | None = None, in_file: bool = True,
           on_cli: bool = True) -> Any:
    """A config field, written once.

    Args:
        default: The value when neither the command line nor a config file gives one.
        help: What the field does and when to change it (the `--help` text).
        cli: The option's name when it is not the field's (`--lambda` for `lam`).
        flag: For a bool: "--on/--off" names (default "--name/--no-name").
        resume: "fixed" or "free" (see the module docstring).
        variant: Runs differing in it are not repeats of each other (`rpd report`).
        teacher_only: A variant that acts only through the teacher (ignored for plain PPO).
        absent: The value a run whose config.json lacks the field trained with.
        choices: The allowed values of a str field.
        in_file: False for run state that a config file must not carry (`resume`): ignored
            when a file is read, so a run's own config.json repeats the run.
        on_cli: False for a field the command sets itself (the command line has no option).
    """
    if resume not in ("fixed", "free"):
        raise ValueError(f"resume={resume!r}: 'fixed' or 'free'")
    meta = dict(help=help, cli=cli, flag=flag, resume=resume, variant=variant,
                teacher_only=teacher_only, absent=absent, choices=choices, in_file=in_file,
                on_cli=on_cli)
    return dataclasses.field(default=default, metadata={"rpd": meta})


@dataclass(frozen=True)
class FieldInfo:
    """One config field and its tags (see `option`)."""

    name: str
    type: Any
    default: Any
    help: str
    cli: str
    flag: str | None
    resume: str
    variant: bool
    teacher_only: bool
    absent: Any
    choices: tuple[str, ...] | None
    in_file: bool
    on_cli: bool

    @property
    def base(self) -> Any:
        """The type without its `| None`."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if _is_union(self.type) and len(args) == 1:
            return args[0]
        return self.type

    @property
    def optional(self) -> bool:
        return _is_union(self.type) and type(None) in typing.get_args(self.type)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def field_infos(cls: type) -> list[FieldInfo]:
    """Every field of a config class declared with `option`, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("rpd")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with rpd.config.option")
        out.append(FieldInfo(name=f.name, type=hints[f.name], default=f.default,
                             help=meta["help"], cli=meta["cli"] or "--" + f.name.replace("_", "-"),
                             flag=meta["flag"], resume=meta["resume"], variant=meta["variant"],
                             teacher_only=meta["teacher_only"], absent=meta["absent"],
                             choices=meta["choices"], in_file=meta["in_file"],
                             on_cli=meta["on_cli"]))
    return out


def fields_where(cls: type, **tags: Any) -> tuple[str, ...]:
    """Names of the fields whose tags have these values, e.g. `resume="fixed"`."""
    return tuple(i.name for i in field_infos(cls)
                 if all(getattr(i, k) == v for k, v in tags.items()))


def absent_values(cls: type) -> dict[str, Any]:
    """{field: the value a run written before it existed trained with}."""
    return {i.name: i.absent for i in field_infos(cls) if i.absent is not MISSING}


# ---------------------------------------------------------------------------------- values


def _type_name(info: FieldInfo) -> str:
    base = info.base
    tup = typing.get_origin(base) is tuple
    name = ("comma-separated " + ("names" if tup and typing.get_args(base)[0] is str
                                  else "integers") if tup
            else "a mapping" if typing.get_origin(base) is dict or base is dict
            else "a path" if base is Path else getattr(base, "__name__", str(base)))
    if info.choices:
        name = "one of " + ", ".join(info.choices)
    return name + (" or null" if info.optional else "")


def coerce(info: FieldInfo, value: Any, where: str | None) -> Any:
    """`value` as the field's type.

    Args:
        where: The config file it came from ("--config FILE"); None for the command line.

    Raises:
        InputError: "`where`: KEY: expected TYPE, got VALUE" (the command line's: "--option
            VALUE: expected TYPE"), one line.
    """
    def bad() -> InputError:
        if where is None:
            return InputError(f"{info.cli} {value!r}: expected {_type_name(info)}")
        return InputError(f"{where}: {info.name}: expected {_type_name(info)}, got {value!r}")

    if value is None:
        if info.optional:
            return None
        raise bad()
    base = info.base
    if base is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise bad()
        if info.choices and value not in info.choices:
            raise bad()
        return value
    if base is Path:
        if not isinstance(value, str | Path):
            raise bad()
        return Path(value)
    if typing.get_origin(base) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise bad()
        if typing.get_args(base)[0] is str:
            if not all(isinstance(x, str) for x in items):
                raise bad()
            out = tuple(x.strip() for x in items)
            if info.choices and not set(out) <= set(info.choices):
                raise bad()
            return out
        try:
            return tuple(int(x) if isinstance(x, str) else _strict_int(x) for x in items)
        except (TypeError, ValueError):
            raise bad() from None
    if typing.get_origin(base) is dict or base is dict:
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    raise TypeError(f"{info.name}: unsupported config type {info.type!r}")


def _strict_int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(x)
    return x


def to_plain(cfg: Any) -> dict[str, Any]:
    """The config as JSON values (paths as strings, tuples as lists), in field order."""
    out: dict[str, Any] = {}
    for info in field_infos(type(cfg)):
        v = getattr(cfg, info.name)
        out[info.name] = (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple)
                          else v)
    return out


# ---------------------------------------------------------------------------------- files


def recipe_path(name_or_path: str | Path) -> Path:
    """A config file's path: the path itself, or a shipped recipe's (`rpd recipes` names)."""
    p = Path(name_or_path)
    if p.suffix or p.exists() or len(p.parts) > 1:
        return p
    return RECIPES_DIR / f"{p}.yaml"


def read_config_file(path: Path, command: str) -> dict[str, Any]:
    """The mapping a YAML or JSON config file holds, its reserved keys checked and removed.

    Raises:
        InputError: a missing or unreadable file, not a mapping, or a recipe for another
            command; one line naming the file.
    """
    if not path.is_file():
        known = ", ".join(n for n, _, _ in list_recipes())
        raise InputError(f"--config {path}: no such file; pass a YAML or JSON file, or a "
                         f"recipe name ({known})")
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise InputError(f"--config {path}: not valid {kind} ({reason})") from None
    except Exception as e:  # yaml.YAMLError and its subclasses
        reason = " ".join(str(e).split())
        raise InputError(f"--config {path}: not valid YAML ({reason[:120]})") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: holds no mapping of option names to values")
    data = dict(data)
    want = data.pop("command", command)
    data.pop("description", None)
    if want != command:
        raise InputError(f"--config {path}: a recipe for `rpd {want}`, not `rpd {command}`")
    return data


def values_from_mapping(cls: type, data: Mapping[str, Any], where: str,
                        backfill: bool = False) -> dict[str, Any]:
    """The fields a mapping sets, checked and coerced.

    Args:
        cls: The config class.
        data: {field name: value} (a config file's content).
        where: How messages name the source ("--config FILE").
        backfill: A run's own config.json: a key it lacks takes the field's `absent` value.

    Raises:
        InputError: an unknown key (with the closest known one) or a wrong type, one line.
    """
    infos = {i.name: i for i in field_infos(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        info = infos.get(str(key))
        if info is None:
            import difflib

            near = difflib.get_close_matches(str(key), infos, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise InputError(f"{where}: unknown key {key!r}{hint} (`rpd {cls.command} --help` "
                             "lists every option)")
        if info.in_file:
            out[info.name] = coerce(info, value, where)
    if backfill:
        for name, value in absent_values(cls).items():
            out.setdefault(name, value)
    return out


def list_recipes() -> list[tuple[str, str, str]]:
    """(name, command, description) of every shipped recipe."""
    out = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        out.append((path.stem, str(data.get("command", "?")),
                    " ".join(str(data.get("description", "")).split())))
    return out


# ---------------------------------------------------------------------------------- click


def click_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: one click option per field of `cls` (except `on_cli=False` ones), named
    `--field-name` (or the field's `cli`), with the field's help, default and type; plus
    `--config FILE`."""
    import click

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for info in reversed([i for i in field_infos(cls) if i.on_cli]):
            f = click.option(*_decls(info), **_click_kwargs(info))(f)
        return click.option(
            "--config", "config_file", default=None, metavar="FILE|RECIPE",
            help="Read options from a YAML or JSON file (a run's own config.json too) or a "
                 "shipped recipe (`rpd recipes`); options given on the command line win.")(f)

    return decorate


def _decls(info: FieldInfo) -> list[str]:
    if info.base is bool:
        return [info.flag or f"{info.cli}/--no-{info.cli[2:]}", info.name]
    return [info.cli, info.name]


def _click_kwargs(info: FieldInfo) -> dict[str, Any]:
    import click

    default = None if info.default is MISSING else info.default
    kw: dict[str, Any] = dict(help=info.help, show_default=default is not None)
    if info.base is bool:
        kw.update(default=default)
        if info.flag is not None and "/" not in info.flag:
            kw.update(is_flag=True)
        return kw
    if typing.get_origin(info.base) is tuple:
        kw.update(type=str, default=",".join(map(str, default)) if default else default)
    elif info.choices:  # checked by `coerce`, so a bad value is one rpd line
        kw.update(type=str, default=default, metavar="[" + "|".join(info.choices) + "]")
    elif info.base is Path:
        kw.update(type=click.Path(path_type=Path), default=default)
    else:
        kw.update(type=info.base, default=default)
    return kw


def from_command_line(cls: type, ctx: Any, params: dict[str, Any], config_file: str | None,
                      **fixed: Any) -> Any:
    """The config of one invocation: the config file's values (if any), then every option the
    command line gave (click's parameter source tells it from a default), then `fixed`.

    Raises:
        InputError: a bad file, key or value (one line naming it).
    """
    import click

    values: dict[str, Any] = {}
    if config_file is not None:
        path = recipe_path(config_file)
        data = read_config_file(path, cls.command)
        # a run directory's own config.json: what its run trained with, older options included
        own = path.name == "config.json" and (path.parent / "eval.csv").is_file()
        values = values_from_mapping(cls, data, f"--config {path}", backfill=own)
    infos = {i.name: i for i in field_infos(cls)}
    for name, value in params.items():
        info = infos.get(name)
        if info is None or not info.on_cli:
            continue
        given = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        if value is None and info.default is MISSING:
            continue  # a required field the command line left out: the file's, or an error
        if given or name not in values:
            values[name] = coerce(info, value, None) if value is not None else None
    values.update(fixed)
    for info in infos.values():
        if info.default is MISSING and info.name not in values:
            raise InputError(f"{info.cli} is required (or give it in --config)")
    return cls(**values)


def as_command_line(cls: type, values: Mapping[str, Any]) -> list[str]:
    """`rpd <command>` options that set `values` (a config mapping), for a subprocess."""
    infos = {i.name: i for i in field_infos(cls)}
    args: list[str] = []
    for name, value in values.items():
        info = infos[name]
        if info.base is bool:
            on, _, off = (info.flag or f"{info.cli}/--no-{info.cli[2:]}").partition("/")
            if value:
                args.append(on)
            elif off:
                args.append(off)
            continue
        if value is None:
            continue  # the field's default None
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        args += [info.cli, str(value)]
    return args
