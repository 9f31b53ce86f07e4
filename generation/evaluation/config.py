"""The settings of `radsynth evaluate` and `radsynth bench utility` as typed sections: a params.yaml
profile's `evaluate:` and `utility:` sections and the commands' flags are the same fields, so a
profile is checked when it is loaded rather than when its stage runs, and each default lives
here alone (the commands' flags take theirs from these). Light on purpose: the CLI reads these
defaults to build its help, without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from conditioning.settings import Section

if TYPE_CHECKING:
    from .utility import UtilityConfig

REAL_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EvaluateSettings(Section):
    """What decides an evaluation besides its inputs (the sets, the dataset, the baseline)."""

    section: ClassVar[str] = "evaluate"
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"real_split": REAL_SPLITS}

    real_split: str = "test"  # the real images compared with
    domain_models: str | None = None  # None: runs/domain-models/<dataset>-<hash>
    epochs: int = 10  # domain-model training epochs
    retrain: bool = False  # train the domain models again even when cached
    detect_epochs: int = 6  # the real-vs-synthetic classifier (detectability); 0 skips it
    bf16: bool = False  # bf16 autocast for domain-model training
    k: int = 3  # neighbours for the precision/recall radii
    pairs: int = 200  # random pairs per MS-SSIM group
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None: torch's choice


@dataclass(frozen=True)
class UtilitySettings(Section):
    """What decides the downstream utility benchmark besides its inputs: the protocol's
    regimes, arms and seeds and the classifiers' training; `utility_config` maps it onto the
    benchmark's `UtilityConfig`."""

    section: ClassVar[str] = "utility"

    attribute: str | None = None  # None: the dataset's first categorical condition
    scarce_class: str | None = None  # None: the rarest class of the train split
    fractions: tuple[float, ...] = (1.0, 0.10, 0.05)  # the scarce class's share kept (1: full)
    subset_seed: int | None = None  # one scarce subset for every seed; None: one per seed
    arms: tuple[str, ...] = (
        "real", "synthetic", "mix", "balanced", "pretrain-finetune", "filter", "signature",
    )  # fmt: skip
    synthetic_ratio: float | None = None  # synthetic images per real one at most; None: all
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    detect_epochs: int = 4  # each set's real-vs-synthetic classifier; 0 skips it
    epochs: int = 8  # the downstream CNN's
    threads: int | None = None  # torch CPU threads; None: torch's choice

    def utility_config(self) -> UtilityConfig:
        """The benchmark's configuration, once the attribute and scarce class are resolved."""
        from .fit import FitConfig
        from .utility import UtilityConfig

        if self.attribute is None or self.scarce_class is None:
            raise ValueError("utility: attribute and scarce_class must be resolved first")
        return UtilityConfig(
            attribute=self.attribute,
            scarce_class=self.scarce_class,
            keep_fractions=self.fractions,
            arms=self.arms,
            seeds=self.seeds,
            fit=FitConfig(epochs=self.epochs),
            subset_seed=self.subset_seed,
            synthetic_ratio=self.synthetic_ratio,
        )
