"""Training and generation settings as typed, frozen dataclasses: the field defaults ARE the
project's defaults, and a params.yaml profile's training and generation sections are mapped
onto them here alone (the whole profile, with the audit, evaluate and utility sections typed by
their own packages, in pipelines/profile.py). A profile only names what it changes; an unknown
section or key, or a value of the wrong type, is an error naming the file, section and key
rather than something silently ignored (conditioning/settings.py's checks).

A training run writes its resolved settings beside its weights (training_config.json, as
diffusers saves its configs) and whatever reads them back (resume, `train adapt`'s parent) goes
through the same checks (`RunSettings.read`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from conditioning.settings import Section

# the checked-section base (conditioning/settings.py), by the name this module always gave it
_Section = Section

SPACES = ("latent", "pixel")  # generation/space.py
SAMPLERS = ("dpm++", "ddim", "euler", "ddpm")  # generation/schedulers.py
MIXED_PRECISIONS = ("no", "bf16", "fp16")
BALANCED = ("grid", "match")  # generation/generate_set.py
TRAINING_CONFIG = "training_config.json"


@dataclass(frozen=True)
class AutoencoderConfig(Section):
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
class DiffusionConfig(Section):
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
class GenerateConfig(Section):
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
class AdaptConfig(Section):
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


# Profile sections of the other stages, typed by the packages that run them and checked with
# these when a whole profile is loaded (pipelines/profile.py); skipped here.
OTHER_SECTIONS = ("audit", "evaluate", "utility")
SECTIONS: dict[str, type[Section]] = {
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
                    f"{source}: unknown section {section!r}; sections are "
                    f"{', '.join([*SECTIONS, *OTHER_SECTIONS])}"
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


def read_profile(
    params: str | Path = "params.yaml", profile: str | None = None
) -> tuple[str, Any, str]:
    """One profile of params.yaml as written, unchecked: its name (`profile`, default the
    file's `profile:`), its mapping of sections and the source its errors name."""
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
    return name, profiles[name], f"{path} profiles.{name}"


def load_profile(params: str | Path = "params.yaml", profile: str | None = None) -> Profile:
    """Read params.yaml and return the checked settings of `profile` (default: its `profile:`)."""
    name, sections, source = read_profile(params, profile)
    return dataclasses.replace(merge_profile(sections, source), profile=name)
