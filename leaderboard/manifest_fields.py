"""Reading a manifest's YAML field by field, so that every error names the file, the entry and the field.

``leaderboard.manifest`` builds its typed objects with these; a wrong value stops the run before anything trains,
with a message such as ``experiments/mhhn/manifest.yaml: experiment 'x': field 'seeds': expected a positive
integer, got 'two'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ManifestError(ValueError):
    """A manifest that is missing, malformed or inconsistent."""


def shown(path: Path) -> str:
    """A path as people type it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def is_scalar(value: Any) -> bool:
    """A YAML value usable as a name or an argument (a string or a number; YAML reads `300w` as a string, `2020`
    as a number); booleans are not."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


class Fields:
    """One mapping of a manifest, read field by field; every error names the file, the entry and the field."""

    def __init__(self, raw: Any, where: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected a mapping, got {raw!r}")
        unknown = sorted(set(map(str, raw)) - set(known))
        if unknown:
            raise ManifestError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        missing = [k for k in required if raw.get(k) is None]
        if missing:
            raise ManifestError(f"{where}: missing {missing}")
        self.raw, self.where = raw, where

    def error(self, key: str, expected: str) -> ManifestError:
        return ManifestError(f"{self.where}: field '{key}': expected {expected}, got {self.raw[key]!r}")

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def text(self, key: str, default: str | None = None) -> str | None:
        if not self.has(key):
            return default
        if not is_scalar(self.raw[key]):
            raise self.error(key, "a string")
        return str(self.raw[key])

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of strings (a single string is a list of one)."""
        value = self.raw.get(key)
        if value is None:
            return ()
        if is_scalar(value):
            return (str(value),)
        if not isinstance(value, list) or not all(is_scalar(v) for v in value):
            raise self.error(key, "a list of strings")
        return tuple(str(v) for v in value)

    def names(self, key: str) -> dict[str, str]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(is_scalar(k) and is_scalar(v) for k, v in value.items()):
            raise self.error(key, "a mapping of names")
        return {str(k): str(v) for k, v in value.items()}

    def count(self, key: str, default: int | None) -> int | None:
        if not self.has(key):
            return default
        value = self.raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.error(key, "a positive integer")
        return value

    def flag(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        if not isinstance(self.raw[key], bool):
            raise self.error(key, "true or false")
        return self.raw[key]

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.text(key, options[0])
        if value not in options:
            raise self.error(key, " or ".join(repr(o) for o in options))
        return value

    def files(self, key: str, base: Path) -> tuple[Path, ...]:
        paths = tuple((base / name).resolve() for name in self.strings(key))
        for path in paths:
            if not path.is_file():
                raise ManifestError(f"{self.where}: field '{key}': config {path} does not exist")
        return paths

    def mapping(self, key: str, where: str, known: tuple[str, ...]) -> Fields:
        value = self.raw.get(key)
        return Fields({} if value is None else value, f"{self.where}: {where}", known)


def items(value: Any, where: str) -> list:
    """A list field (absent: empty), refused with its place when it is anything else."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list, got {value!r}")
    return value
