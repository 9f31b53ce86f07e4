"""Typed settings sections: frozen dataclasses whose field defaults are the defaults, built from
a mapping (a params.yaml profile's section, a saved JSON, a command's parsed flags) with every
value checked against its field's type. It sits at the bottom layer so that `generation` and
`privacy_audit`, which may not import each other, check their settings the same way."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar


class Section:
    """What every settings section shares: its name in params.yaml, the values some fields are
    limited to, and checked construction from a mapping (a profile's section, a saved JSON)."""

    section: ClassVar[str]
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}

    @classmethod
    def from_json(cls, values: dict[str, Any] | None, source: str = "params.yaml"):
        """The defaults overlaid with `values`, each checked against its field's type."""
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"{source}: section {cls.section} must be a mapping, got {values!r}")
        hints = typing.get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values or {}) - set(known))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(unknown)} in {cls.section}; "
                f"known: {', '.join(known)}"
            )
        checked = {
            key: check(value, hints[key], cls.choices.get(key), f"{source}: {cls.section}.{key}")
            for key, value in (values or {}).items()
        }
        return cls(**checked)

    @classmethod
    def from_namespace(cls, namespace: Any, source: str):
        """The section from a command's parsed flags (an argparse namespace), checked: its
        fields are named as the flags are (`quantile` for --quantile); a field the command has
        no flag for keeps its default."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        given = {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}
        return cls.from_json(given, source)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists for tuples), in field order: config.json's `settings`, the
        card's `params` and the checkpoint's settings hash are made from it."""
        return {
            f.name: plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    def updated(self, source: str = "override", **values):
        """A copy with `values` changed, checked as a profile's are."""
        return type(self).from_json({**self.to_dict(), **values}, source)


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check(value: Any, hint: Any, choices: tuple[Any, ...] | None, where: str) -> Any:
    """`value` if it has type `hint` (ints pass for floats, bools never for numbers), a tuple
    for a list; otherwise a ValueError naming `where`, the expected type and the value."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:  # tuple[X, ...]: a list (YAML, JSON) of X
        if not isinstance(value, list | tuple) or not all(_is(v, args[0]) for v in value):
            raise ValueError(f"{where}: expected a list of {args[0].__name__}, got {value!r}")
        return tuple(value)
    options = [a for a in args if a is not type(None)] if args else [hint]
    if value is None and type(None) in args:
        return None
    if not any(_is(value, option) for option in options):
        expected = " or ".join(o.__name__ for o in options)
        if type(None) in args:
            expected += " or null"
        hint_text = ""
        if isinstance(value, str) and float in options:
            hint_text = " (YAML reads 1e-3 as a string: write 1.0e-3)"
        raise ValueError(f"{where}: expected {expected}, got {value!r}{hint_text}")
    if choices is not None and value not in choices:
        raise ValueError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
