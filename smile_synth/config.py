"""Loading YAML/JSON and building validated, frozen config dataclasses from plain dicts.

Configs are checked once here, at the edge; code inside trusts them.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"config file {p} is a folder; pass a .yaml/.json file of settings")
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; pass an existing .yaml/.json file")
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"cannot parse {p}: {str(e).splitlines()[0]}; fix the file's syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
    return data


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """'objects.count=[1,3]' -> (['objects', 'count'], [1, 3]); the value is parsed as YAML."""
    if "=" not in text:
        raise UserError(f"--set {text!r} is not KEY=VALUE; write e.g. --set objects.count=[1,3]")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def set_path(data: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            raise UserError(f"cannot set {'.'.join(keys)}: {k} is not a section")
    data[keys[-1]] = value


def build(cls: type, data: dict[str, Any] | None, base: Any = None, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, starting from `base` (an instance) or the defaults.

    Nested dataclass fields merge; every other field (numbers, pairs, weight dicts) is replaced.
    Unknown keys and wrongly typed values raise UserError naming the key.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(fields)}"
            raise UserError(f"unknown setting {where}{key}{hint}")
    for name in fields:
        current = getattr(base, name) if base is not None else None
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, data.get(name), current, f"{where}{name}.")
        elif name in data:
            kwargs[name] = _coerce(data[name], tp, f"{where}{name}")
        elif base is not None:
            kwargs[name] = current
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return _coerce(value, tp, where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:      # tuple[X, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise UserError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping like {{name: weight}}, got {value!r}")
        kt, vt = args
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UserError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be text, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


# ---- the numbers an option may take, checked once at the edge ------------------------------------

MAX_FRAMES = 512     # frames per clip: far beyond any video transformer's clips (VideoMAE 16, long-clip work 64-128)
MAX_SIZE = 2048      # frame side in px: far beyond any video transformer's input (224-448)
MAX_WORKERS = 256    # data-loading processes per training process


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one): the default number of
    render and planning processes."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The values an option may take: a finite number from `low` to `high` (None: no bound on that side),
    an end itself excluded when `open_low` / `open_high`."""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, v: float) -> bool:
        return (math.isfinite(v)
                and (self.low is None or (v > self.low if self.open_low else v >= self.low))
                and (self.high is None or (v < self.high if self.open_high else v <= self.high)))

    def __str__(self) -> str:
        lo, hi = _number(self.low), _number(self.high)
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {lo}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {hi}"
        return f"in {'(' if self.open_low else '['}{lo}, {hi}{')' if self.open_high else ']'}"


AT_LEAST_1, SHARE, POSITIVE = Bounds(1), Bounds(0, 1), Bounds(0, open_low=True)   # the common ones


def _number(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


def check_bounds(config: Any, bounds: dict[str, Bounds]) -> None:
    """For each field of `config` named in `bounds` (None: not set, skipped): one UserError naming its
    option (--field-name) when the value is not a finite number within its Bounds (nan and inf never are)."""
    for name, b in bounds.items():
        v = getattr(config, name)
        if v is None or b.holds(v):
            continue
        finite = "a finite number " if not math.isfinite(v) and (b.low is not None or b.high is not None) else ""
        raise UserError(f"--{name.replace('_', '-')} {v} must be {finite}{b}")


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(what: str, nbytes: int, fix: str) -> None:
    """One UserError when `what` (e.g. "one step's batch of 8 x 2 clips of 16 x 224 px") takes more than
    this machine's memory: `nbytes` is what it would allocate; `fix` names the options to lower."""
    total = memory_bytes()
    if total and nbytes > total:
        raise UserError(f"{what} takes {nbytes / 2**30:,.1f} GiB, more than this machine's {total / 2**30:,.1f} GiB "
                        f"of memory; {fix}")
