"""Training configuration: a frozen dataclass tree read from TOML, strictly validated, hashable, savable.

A config file holds the sections of :mod:`training.config_schema` as TOML tables (``[data]``, ``[optim]``,
...) plus optional top-level ``name``, ``description`` and ``extends = "other.toml"`` (path relative to the
file; the parent is loaded first and the child's keys override it key by key; chains allowed, cycles refused).
Unknown sections or keys raise :class:`ConfigError` naming the key and the file. Command-line overrides
``section.key=value`` are coerced to the field's declared type (``optim.lr=1e-4``, ``train.seeds=0,1,2``,
``eval.tta_hflip=true``).

``to_toml`` writes the fully resolved config (every field, no ``extends``) so that a run folder holds the
exact recipe; ``load_config`` reads it back to an equal object. ``config_hash`` identifies the recipe and
ignores where things live on this machine (data root, cache folder, device, threads, workers).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from training.config_schema import SECTIONS, TOP_LEVEL_SCALARS, ConfigError, TrainConfig

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
# Fields that say where and on what a run happens, not what it computes: left out of config_hash.
ENVIRONMENT_KEYS = frozenset({
    ("data", "root"), ("data", "busbra_root"), ("data", "cache_dir"), ("data", "decode_threads"),
    ("train", "device"), ("train", "num_threads"), ("train", "num_workers"),
})
# Fields that change only what `busi-train export` writes, never a fitted or evaluated run: left out of
# config_hash, so runs of one recipe made before and after such a field was added still summarise together.
EXPORT_ONLY_KEYS = frozenset({("eval", "scope_margin")})
# Fields added after runs were published, whose default reproduces the recipe from before they existed: left out
# of config_hash while they hold their default, so every earlier recipe keeps its hash.
ADDED_LATER_KEYS = frozenset({("loss", "evidence_weight"), ("loss", "evidence_sharpness"), ("model", "output_stride")})


def _field_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


# ---------------------------------------------------------------------------------------------- type coercion

def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _type_name(tp: Any) -> str:
    if _is_tuple(tp):
        return f"a list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def _typed(value: Any, tp: Any, key: str, where: str) -> Any:
    """``value`` as read from TOML, checked (and int -> float widened) against the field type ``tp``."""
    def bad() -> ConfigError:
        return ConfigError(f"{key} in {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")

    if _is_tuple(tp):
        if not isinstance(value, (list, tuple)):
            raise bad()
        inner = typing.get_args(tp)[0]
        return tuple(_typed(v, inner, key, where) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported config field type {tp!r}")  # a programming error in this module


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_text(text: str, tp: Any, key: str) -> Any:
    """A command-line value (always text) as the field type ``tp``."""
    raw = text.strip()
    try:
        if _is_tuple(tp):
            inner = typing.get_args(tp)[0]
            body = raw[1:-1] if raw[:1] in "[(" and raw[-1:] in "])" and raw else raw
            return tuple(_parse_text(part, inner, key) for part in body.split(",") if part.strip())
        if tp is str:
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
                return raw[1:-1]
            return raw
        if tp is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError
        if tp is int:
            return int(raw.replace("_", ""))
        if tp is float:
            value = float(raw.replace("_", ""))
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(f"override {key}={text!r}: expected {_type_name(tp)}") from None
    raise TypeError(f"unsupported config field type {tp!r}")


# -------------------------------------------------------------------------------------------------- loading

def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(raw: Mapping[str, Any], where: str) -> None:
    """Refuse unknown sections and keys, naming them and the file."""
    for top, value in raw.items():
        if top == "extends" or top in TOP_LEVEL_SCALARS:
            continue
        if top not in SECTIONS:
            known = list(SECTIONS) + list(TOP_LEVEL_SCALARS) + ["extends"]
            raise ConfigError(f"unknown section or key {top!r} in {where}{_suggest(top, known)} "
                              f"(sections: {', '.join(SECTIONS)})")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{top!r} in {where} must be a table ([{top}]), got {type(value).__name__}")
        known_keys = _field_types(top)
        for key in value:
            if key not in known_keys:
                raise ConfigError(f"unknown key '{top}.{key}' in {where}{_suggest(key, known_keys)} "
                                  f"(keys of [{top}]: {', '.join(known_keys)})")


def _read_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, raw dict)] from the root of the ``extends`` chain down to ``path``."""
    path = path.expanduser().resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"'extends' forms a cycle: {cycle}")
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        hint = f" (extended by {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} not found{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    _check_keys(raw, str(path))
    parent = raw.get("extends")
    if parent is None:
        return [(path, raw)]
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"'extends' in {path} must be a file name (a string), got {parent!r}")
    return _read_layers(path.parent / parent, (*chain, path)) + [(path, raw)]


def _build(layers: list[tuple[str, Mapping[str, Any]]], overrides: Mapping[tuple[str, str], Any]) -> TrainConfig:
    """Merge raw layers key by key (later wins), apply typed overrides, construct and validate."""
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    top: dict[str, Any] = {}
    for where, raw in layers:
        for name in TOP_LEVEL_SCALARS:
            if name in raw:
                top[name] = _typed(raw[name], str, name, where)
        for section in SECTIONS:
            types_ = _field_types(section)
            for key, value in raw.get(section, {}).items():
                values[section][key] = _typed(value, types_[key], f"{section}.{key}", where)
    for (section, key), value in overrides.items():
        values[section][key] = value
    try:
        sections = {section: SECTIONS[section](**kwargs) for section, kwargs in values.items()}
        return TrainConfig(**top, **sections)
    except ConfigError as exc:
        origin = " / ".join(where for where, _ in layers) or "<defaults>"
        raise ConfigError(f"{exc} (config: {origin})") from None


def parse_overrides(items: Iterable[str]) -> dict[tuple[str, str], Any]:
    """``["optim.lr=1e-4", "train.seeds=0,1"]`` -> {("optim", "lr"): 1e-4, ("train", "seeds"): (0, 1)}."""
    parsed: dict[tuple[str, str], Any] = {}
    for item in items:
        dotted, sep, text = item.partition("=")
        dotted = dotted.strip()
        if not sep or "." not in dotted:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}{_suggest(section, SECTIONS)} "
                              f"(sections: {', '.join(SECTIONS)})")
        types_ = _field_types(section)
        if key not in types_:
            raise ConfigError(f"override {item!r}: unknown key '{section}.{key}'{_suggest(key, types_)} "
                              f"(keys of [{section}]: {', '.join(types_)})")
        parsed[(section, key)] = _parse_text(text, types_[key], dotted)
    return parsed


def load_config(path: Path | str, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a TOML config (following ``extends``), then apply ``section.key=value`` overrides.

    A bare name such as ``"busi_paper"`` finds ``training/configs/busi_paper.toml``.
    Raises :class:`ConfigError` (a ValueError) for every problem, naming the key and the file.
    """
    path = Path(path)
    if not path.suffix and not path.exists() and (CONFIGS_DIR / f"{path.name}.toml").is_file():
        path = CONFIGS_DIR / f"{path.name}.toml"
    layers = [(str(p), raw) for p, raw in _read_layers(path)]
    return _build(layers, parse_overrides(overrides))


def config_from_dict(data: Mapping[str, Any], where: str = "<dict>") -> TrainConfig:
    """The inverse of :func:`to_dict` (also accepts partial dicts: missing keys take their defaults)."""
    raw = dict(data)
    if "extends" in raw:
        raise ConfigError(f"'extends' is only understood in files, not in {where}")
    _check_keys(raw, where)
    return _build([(where, raw)], {})


def apply_overrides(config: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """A copy of ``config`` with ``section.key=value`` overrides applied and validated."""
    return _build([("<config>", to_dict(config))], parse_overrides(overrides))


# ------------------------------------------------------------------------------------------ saving, hashing

def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain, JSON-serialisable nested dict (tuples become lists)."""
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    out: dict[str, Any] = {name: getattr(config, name) for name in TOP_LEVEL_SCALARS}
    for section in SECTIONS:
        obj = getattr(config, section)
        out[section] = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: TrainConfig) -> str:
    """The fully resolved config as TOML text (every field, no ``extends``); ``load_config`` reads it back."""
    data = to_dict(config)
    lines = [f"# Resolved busi-train configuration, hash {config_hash(config)}"]
    lines += [f"{name} = {_toml_value(data[name])}" for name in TOP_LEVEL_SCALARS]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in data[section].items()]
    return "\n".join(lines) + "\n"


def config_hash(config: TrainConfig) -> str:
    """16 hex digits of the SHA-256 of the recipe: every field except name/description, ENVIRONMENT_KEYS,
    EXPORT_ONLY_KEYS and ADDED_LATER_KEYS fields that hold their default."""
    data = to_dict(config)
    for name in TOP_LEVEL_SCALARS:
        data.pop(name)
    for section, key in ENVIRONMENT_KEYS | EXPORT_ONLY_KEYS:
        data[section].pop(key)
    defaults = to_dict(TrainConfig())
    for section, key in ADDED_LATER_KEYS:
        if data[section][key] == defaults[section][key]:
            data[section].pop(key)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
