"""A whole params.yaml profile, all seven sections typed: the training and generation sections
(generation.config's `Profile`) and those of the audit, evaluate and utility stages, each typed
by the package that runs it. Only this layer may hold them all (privacy_audit and generation do
not import each other), so a profile is mapped here once and checked as a whole when it is
loaded: a typo in `audit:` fails before any stage has run, not when the audit stage starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conditioning.settings import Section
from generation.config import SECTIONS, Profile, read_profile
from generation.evaluation.config import EvaluateSettings, UtilitySettings
from privacy_audit.config import AuditSettings

# generation.config.OTHER_SECTIONS: what generation.config's Profile skips, typed here
STAGE_SECTIONS: dict[str, type[Section]] = {
    "audit": AuditSettings,
    "evaluate": EvaluateSettings,
    "utility": UtilitySettings,
}
ALL_SECTIONS = (*SECTIONS, *STAGE_SECTIONS)


@dataclass(frozen=True)
class PipelineProfile:
    """One profile, every section typed (the defaults where it is silent), and which keys of
    each section it names: a stage passes its command only those, as flags, so the command's
    own defaults (and a model's saved ones) decide the rest as they always did."""

    training: Profile = field(default_factory=Profile)
    audit: AuditSettings = field(default_factory=AuditSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    utility: UtilitySettings = field(default_factory=UtilitySettings)
    named: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, source: str = "params.yaml") -> PipelineProfile:
        """Every section of `data` checked over the defaults; an unknown section or key, or a
        value of the wrong type, is a ValueError naming `source`, the section and the key."""
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{source}: a profile must be a mapping of sections, got {data!r}")
        data = data or {}
        unknown = [name for name in data if name not in ALL_SECTIONS]
        if unknown:
            raise ValueError(
                f"{source}: unknown section {unknown[0]!r}; sections are {', '.join(ALL_SECTIONS)}"
            )
        stages = {
            name: kind.from_json(data.get(name), source) for name, kind in STAGE_SECTIONS.items()
        }
        named = {name: tuple(values or {}) for name, values in data.items()}
        return cls(Profile.from_json(data, source), **stages, named=named)

    @property
    def name(self) -> str | None:
        return self.training.profile

    def section(self, name: str) -> Section:
        """The typed section `name` (any of the seven)."""
        if name in STAGE_SECTIONS:
            return getattr(self, name)
        if name in SECTIONS:
            return getattr(self.training, name)
        raise ValueError(f"unknown section {name!r}; sections are {', '.join(ALL_SECTIONS)}")

    def given(self, name: str) -> dict[str, Any]:
        """The checked values of the keys the profile names in section `name`, in its order
        (lists for tuples): what its stage passes as flags."""
        values = self.section(name).to_dict()
        return {key: values[key] for key in self.named.get(name, ())}

    def to_json(self) -> dict[str, Any]:
        return {name: self.section(name).to_dict() for name in ALL_SECTIONS}


def load_pipeline_profile(
    params: str | Path = "params.yaml", profile: str | None = None
) -> PipelineProfile:
    """Read params.yaml and return the checked settings of `profile` (default: its `profile:`),
    every section of it, as generation.config.load_profile does for the training sections."""
    name, sections, source = read_profile(params, profile)
    loaded = PipelineProfile.from_json(sections, source)
    return dataclasses.replace(loaded, training=dataclasses.replace(loaded.training, profile=name))
