"""Training and generation settings as typed, frozen dataclasses: the field defaults ARE the
project's defaults, and the `profiles:` section of params.yaml is mapped onto them here alone.
A profile only names what it changes; an unknown section or key, or a value of the wrong type,
is an error naming the file, section and key rather than something silently ignored.

A training run writes its resolved settings beside its weights (training_config.json, as
diffusers saves its configs) and whatever reads them back (resume, `train adapt`'s parent) goes
through the same checks (`RunSettings.read`)."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

SPACES = ("latent", "pixel")  # generation/space.py
SAMPLERS = ("dpm++", "ddim", "euler", "ddpm")  # generation/schedulers.py
MIXED_PRECISIONS = ("no", "bf16", "fp16")
BALANCED = ("grid", "match")  # generation/generate_set.py
TRAINING_CONFIG = "training_config.json"


class _Section:
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
            key: _checked(value, hints[key], cls.choices.get(key), f"{source}: {cls.section}.{key}")
            for key, value in (values or {}).items()
        }
        return cls(**checked)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists for tuples), in field order: config.json's `settings`, the
        card's `params` and the checkpoint's settings hash are made from it."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    def updated(self, source: str = "override", **values):
        """A copy with `values` changed, checked as a profile's are."""
        return type(self).from_json({**self.to_dict(), **values}, source)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _checked(value: Any, hint: Any, choices: tuple[Any, ...] | None, where: str) -> Any:
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


@dataclass(frozen=True)
class AutoencoderConfig(_Section):
    """`train autoencoder`: the KL autoencoder's network and training."""

    section: ClassVar[str] = "autoencoder"
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"mixed_precision": MIXED_PRECISIONS}

    channels: tuple[int, ...] = (32, 64, 64)  # len-1 halvings: 3 levels = 4x, 4 levels = 8x
    latent_channels: int = 4
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    attention: bool = False
    batch_size: int = 16  # per process; global batch = batch_size x processes x grad_accum
    grad_accum: int = 1  # micro-steps per optimizer step (accelerate's accumulation)
    lr: float = 1.0e-3
    steps: int = 1000
    max_minutes: float = 0  # wall-clock cap (0 = none)
    kl_weight: float = 1.0e-6
    ssim_weight: float = 0.5
    ssim_kernel: int = 7
    adversarial_weight: float = 0.0  # 0 disables the patch discriminator
    adversarial_start: int = 0
    discriminator_channels: int = 32
    checkpoint_every: int = 200
    mixed_precision: str = "bf16"
    seed: int = 0


@dataclass(frozen=True)
class DiffusionConfig(_Section):
    """`train diffusion`: the conditioned UNet, its noise schedule and its training."""

    section: ClassVar[str] = "diffusion"
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {
        "space": SPACES,
        "mixed_precision": MIXED_PRECISIONS,
    }

    # what the UNet denoises: `latent` (the autoencoder's latents) or `pixel` (the images in
    # [-1, 1] themselves: no autoencoder, no decoder signature; generation/space.py)
    space: str = "latent"
    channels: tuple[int, ...] = (64, 128, 128)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32
    prediction_type: str = "v_prediction"  # or epsilon (amplifies early errors at high noise)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    min_snr_gamma: float = 5.0  # 0 disables min-SNR weighting
    condition_dropout: float = 0.15  # per attribute
    # class-balanced batches: a categorical condition and how far towards equal shares
    # (0 = plain shuffling, 0.5 = square-root sampling, 1 = equal; generation/data.py)
    balance_by: str = ""
    balance_power: float = 0.0
    mask_dropout: float = 0.5  # how often the mask condition is hidden (masked datasets)
    ema_decay: float = 0.999
    lr: float = 2.0e-4
    batch_size: int = 32  # per process, as above
    grad_accum: int = 1
    steps: int = 2000
    max_minutes: float = 0
    checkpoint_every: int = 500
    grid_columns: int = 8
    mixed_precision: str = "bf16"
    seed: int = 0

    @property
    def warmup(self) -> int:
        """Learning-rate warmup steps: none when training from scratch."""
        return 0


@dataclass(frozen=True)
class GenerateConfig(_Section):
    """Sampling: the one home of the generation defaults. The pipeline's generate stage
    (pipelines/stages.py) passes a profile's values as flags; a model run saves its own (its
    config.json `generate`), which `Sampling.resolve` falls back to."""

    section: ClassVar[str] = "generate"
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"sampler": SAMPLERS, "balanced": BALANCED}

    n: int = 100
    seed: int = 0
    balanced: str | None = "grid"
    sampler: str = "dpm++"
    steps: int = 20
    guidance: float = 2.0
    batch_size: int = 32
    bf16: bool = True


@dataclass(frozen=True)
class AdaptConfig(_Section):
    """`train adapt`: fine-tuning a trained model on a subset.

    Defaults measured on Kermany (docs/generation.md#measured): full fine-tuning that continues
    the parent's optimisation (its lr and batch) and averages over about a thousand steps beats
    LoRA at 1e-4 with a short average, which made every base worse."""

    section: ClassVar[str] = "adapt"
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"mixed_precision": MIXED_PRECISIONS}

    lora_rank: int = 0  # 0: fine-tune every weight; --lora RANK for LoRA on the linear layers
    lr: float | None = None  # None: the parent's training lr
    steps: int = 500
    batch_size: int | None = None  # None: the parent's training batch size (per process)
    grad_accum: int = 1
    replay: float = 0.5  # share of each batch replayed from the train images outside --where
    warmup_steps: int = 50  # linear learning-rate warmup: a fresh Adam jolts a trained model
    ema_decay: float = 0.999  # no warmup here: the average starts from the parent's weights
    max_minutes: float = 0
    checkpoint_every: int = 100
    mixed_precision: str = "bf16"
    seed: int = 0


@dataclass(frozen=True)
class AdaptedConfig(DiffusionConfig):
    """What `train adapt` trains with: the diffusion section under the adapt section's values
    (lr and batch size resolved), in the parent's space. Its `to_dict` is the merged mapping
    adapted runs always recorded, so their settings hash and config.json stay as they were."""

    section: ClassVar[str] = "adapt"

    lora_rank: int = 0
    replay: float = 0.5
    warmup_steps: int = 50

    @classmethod
    def merge(cls, diffusion: DiffusionConfig, adapt: AdaptConfig, space: str) -> AdaptedConfig:
        if adapt.lr is None or adapt.batch_size is None:
            raise ValueError("adapt: lr and batch_size must be resolved (the parent's) first")
        values = {**diffusion.to_dict(), **adapt.to_dict(), "space": space}
        return cls.from_json(values, "adapt")

    @property
    def warmup(self) -> int:
        return self.warmup_steps


# Profile sections of other stages: their own commands check them (pipelines/stages.py).
OTHER_SECTIONS = ("audit", "evaluate", "utility")
SECTIONS: dict[str, type[_Section]] = {
    "autoencoder": AutoencoderConfig,
    "diffusion": DiffusionConfig,
    "generate": GenerateConfig,
    "adapt": AdaptConfig,
}


@dataclass(frozen=True)
class Profile:
    """One profile's settings, every section typed (the defaults where the profile is silent),
    and the profile's name (None for settings made in code)."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    profile: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, source: str = "params.yaml") -> Profile:
        """Sections of `data` over the defaults; the other stages' sections are skipped."""
        sections: dict[str, Any] = {}
        for section, values in (data or {}).items():
            if section in OTHER_SECTIONS:
                continue
            if section not in SECTIONS:
                raise ValueError(
                    f"{source}: unknown section {section!r}; sections are {', '.join(SECTIONS)}"
                )
            sections[section] = SECTIONS[section].from_json(values, source)
        return cls(**sections)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    def updated(self, **sections: dict[str, Any]) -> Profile:
        """A copy with some values of some sections changed, checked as a profile's are:
        `settings.updated(diffusion={"steps": 10})`."""
        changed = {
            name: getattr(self, name).updated(f"{name} override", **values)
            for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)


@dataclass(frozen=True)
class RunSettings:
    """What a training run saves beside its weights (training_config.json): the settings it
    was trained with, resolved (an adapted run's lr, batch size and space are its parent's),
    and the section that trained it (`autoencoder`, `diffusion` or `adapt`)."""

    trained: str
    settings: Profile
    FORMAT_VERSION: ClassVar[int] = 1

    @property
    def config(self) -> AutoencoderConfig | DiffusionConfig:
        """The settings of the section the run trained with (adapt: merged over diffusion)."""
        s = self.settings
        if self.trained == "adapt":
            return AdaptedConfig.merge(s.diffusion, s.adapt, s.diffusion.space)
        return getattr(s, self.trained)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.FORMAT_VERSION,
            "trained": self.trained,
            "profile": self.settings.profile,
            **self.settings.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = TRAINING_CONFIG) -> RunSettings:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", None)
        if version != cls.FORMAT_VERSION:
            raise ValueError(f"{source}: format_version {version!r}, expected {cls.FORMAT_VERSION}")
        trained, profile = data.pop("trained", None), data.pop("profile", None)
        if trained not in ("autoencoder", "diffusion", "adapt"):
            raise ValueError(
                f"{source}: trained must be autoencoder, diffusion or adapt, got {trained!r}"
            )
        if profile is not None and not isinstance(profile, str):
            raise ValueError(f"{source}: profile must be a string or null, got {profile!r}")
        settings = dataclasses.replace(Profile.from_json(data, source), profile=profile)
        return cls(trained, settings)

    def write(self, run: str | Path) -> Path:
        """training_config.json in `run`, written atomically."""
        from conditioning.dataset import write_json_atomic

        path = Path(run) / TRAINING_CONFIG
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, run: str | Path) -> RunSettings | None:
        """The run's saved settings, checked; None for a run from before the file existed."""
        path = Path(run) / TRAINING_CONFIG
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: unreadable ({err})") from None
        return cls.from_json(data, str(path))


def merge_profile(profile: dict[str, Any] | None, source: str = "params.yaml") -> Profile:
    """The defaults overlaid with one profile's sections; unknown sections or keys and values of
    the wrong type raise a ValueError naming `source`, the section and the key."""
    if profile is not None and not isinstance(profile, dict):
        raise ValueError(f"{source}: a profile must be a mapping of sections, got {profile!r}")
    return Profile.from_json(profile, source)


def load_profile(params: str | Path = "params.yaml", profile: str | None = None) -> Profile:
    """Read params.yaml and return the checked settings of `profile` (default: its `profile:`)."""
    import yaml

    path = Path(params)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    profiles = data.get("profiles") or {}
    name = profile or data.get("profile") or "demo"
    if name not in profiles:
        raise ValueError(
            f"{path}: profile {name!r} not found; profiles are {', '.join(profiles) or 'none'}"
        )
    settings = merge_profile(profiles[name], f"{path} profiles.{name}")
    return dataclasses.replace(settings, profile=name)
