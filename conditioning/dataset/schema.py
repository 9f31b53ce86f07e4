"""The condition schema: which attributes a dataset (and a model trained on it) can be asked for.

It lives in `dataset.json` and travels with every model trained on that dataset, so a request
("viral pneumonia, 30 months") can be validated long after the data is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import DatasetError

CATEGORICAL = "categorical"
CONTINUOUS = "continuous"


@dataclass(frozen=True)
class Attribute:
    """One condition attribute: categorical with a vocabulary, or continuous with unit and range."""

    name: str
    kind: str
    values: tuple[str, ...] = ()
    unit: str = ""
    minimum: float = 0.0
    maximum: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind == CATEGORICAL:
            if not self.values:
                raise ValueError(f"categorical attribute {self.name!r} needs a vocabulary")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"categorical attribute {self.name!r} repeats a value")
        elif self.kind == CONTINUOUS:
            if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)):
                raise ValueError(f"continuous attribute {self.name!r} needs a finite range")
            if self.maximum <= self.minimum:
                raise ValueError(f"continuous attribute {self.name!r}: max must exceed min")
        else:
            raise ValueError(f"attribute {self.name!r}: kind must be categorical or continuous")

    def parse(self, raw: Any) -> str | float | None:
        """Parse a stored or requested value; None means unknown. Raises ValueError if not allowed."""
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None
        if self.kind == CATEGORICAL:
            value = str(raw).strip()
            if value not in self.values:
                allowed = ", ".join(self.values)
                raise ValueError(f"{self.name}={value!r} is not allowed; allowed: {allowed}")
            return value
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}={raw!r} is not a number") from None
        if not (self.minimum <= value <= self.maximum):
            raise ValueError(
                f"{self.name}={value:g} {self.unit} is outside the range "
                f"[{self.minimum:g}, {self.maximum:g}] {self.unit}".rstrip()
            )
        return value

    def describe(self) -> str:
        if self.kind == CATEGORICAL:
            return f"{self.name} (categorical: {', '.join(self.values)})"
        return f"{self.name} (continuous, {self.unit}: {self.minimum:g}..{self.maximum:g})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == CATEGORICAL:
            out["values"] = list(self.values)
        else:
            out.update(unit=self.unit, min=self.minimum, max=self.maximum)
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Attribute:
        kind = data.get("type")
        if kind == CATEGORICAL:
            values = data.get("values")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"attribute {name!r}: 'values' must be a list of strings")
            return cls(name, kind, values=tuple(values), description=data.get("description", ""))
        if kind == CONTINUOUS:
            try:
                lo, hi = float(data["min"]), float(data["max"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"attribute {name!r}: continuous needs numeric 'min' and 'max'"
                ) from None
            return cls(
                name,
                kind,
                unit=str(data.get("unit", "")),
                minimum=lo,
                maximum=hi,
                description=data.get("description", ""),
            )
        raise ValueError(f"attribute {name!r}: 'type' must be 'categorical' or 'continuous'")


@dataclass(frozen=True)
class ConditionSchema:
    """The ordered set of condition attributes of a dataset or model."""

    attributes: tuple[Attribute, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError("condition schema repeats an attribute name")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def __getitem__(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(a.name == name for a in self.attributes)

    def __len__(self) -> int:
        return len(self.attributes)

    def validate_request(self, request: dict[str, Any]) -> dict[str, str | float | None]:
        """Check a generation request; unknown attributes and bad values raise a ValueError that
        lists what is allowed. Attributes not named are left unconditioned (None)."""
        unknown = sorted(set(request) - set(self.names))
        if unknown:
            allowed = "; ".join(a.describe() for a in self.attributes) or "none"
            raise ValueError(
                f"unknown condition attribute(s) {', '.join(unknown)}; allowed: {allowed}"
            )
        return {a.name: a.parse(request.get(a.name)) for a in self.attributes}

    def to_json(self) -> dict[str, Any]:
        return {a.name: a.to_json() for a in self.attributes}

    @classmethod
    def from_json(cls, data: Any, source: str = "dataset.json") -> ConditionSchema:
        if not isinstance(data, dict):
            raise DatasetError(source, "'conditions' must be an object of attribute definitions")
        try:
            return cls(tuple(Attribute.from_json(n, d) for n, d in data.items()))
        except (ValueError, AttributeError) as exc:
            raise DatasetError(source, f"bad condition schema: {exc}") from None
