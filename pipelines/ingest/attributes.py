"""The condition schema of an ingested dataset: attributes the reader declared, well-known ones
(age in months, sex), and the rest inferred from the values seen."""

from __future__ import annotations

import math
from typing import Any

from conditioning.dataset import CATEGORICAL, CONTINUOUS, Attribute, ConditionSchema

KNOWN = {
    "age_months": Attribute(
        "age_months",
        CONTINUOUS,
        unit="months",
        minimum=0,
        maximum=240,
        description="patient age in months",
    ),
    "sex": Attribute("sex", CATEGORICAL, values=("F", "M"), description="patient sex"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_schema(
    observed: dict[str, list[Any]], declared: dict[str, Attribute], notes: list[str]
) -> ConditionSchema:
    """One attribute per condition name seen; a declared/known vocabulary or range is widened
    (with a note) when the data hold values outside it."""
    attributes = []
    for name in observed:
        values = [v for v in observed[name] if v is not None]
        base = declared.get(name) or KNOWN.get(name)
        numeric = bool(values) and all(_is_number(v) for v in values)
        if base is not None and base.kind == CONTINUOUS or base is None and numeric:
            if not numeric and values:
                raise ValueError(f"condition {name!r} mixes numbers and text")
            lo = min(values, default=0.0)
            hi = max(values, default=1.0)
            if base is not None:
                if lo < base.minimum or hi > base.maximum:
                    notes.append(f"{name}: values {lo:g}..{hi:g} widen the usual range")
                lo, hi = min(lo, base.minimum), max(hi, base.maximum)
            hi = hi if hi > lo else lo + 1.0
            attributes.append(
                Attribute(
                    name,
                    CONTINUOUS,
                    unit=base.unit if base else "",
                    minimum=float(math.floor(lo)),
                    maximum=float(math.ceil(hi)),
                    description=base.description if base else "",
                )
            )
            continue
        seen = sorted({str(v) for v in values})
        vocabulary = list(base.values) if base is not None else []
        extra = [v for v in seen if v not in vocabulary]
        if base is not None and extra and name in KNOWN:
            notes.append(f"{name}: values {', '.join(extra)} added to the usual vocabulary")
        vocabulary += extra
        if not vocabulary:
            notes.append(f"{name}: no value known for any image; attribute dropped")
            continue
        attributes.append(
            Attribute(
                name,
                CATEGORICAL,
                values=tuple(vocabulary),
                description=base.description if base else "",
            )
        )
    return ConditionSchema(tuple(attributes))
