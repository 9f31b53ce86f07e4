"""The audit's settings as one typed section: the `audit:` section of a params.yaml profile and
the flags of `radsynth audit` are the same fields, so a profile is checked when it is loaded
rather than when its stage runs, and each default lives here alone (`AuditConfig`, the
command's flags and `radsynth bench memorization` take theirs from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from conditioning.settings import Section

if TYPE_CHECKING:
    from .audit import AuditConfig

BF16_HELP = (
    "run the copy encoder, pair verifier and aligner in bf16 where the CPU runs it natively "
    "(AVX512-BF16, AMX; fp32 elsewhere)"
)


@dataclass(frozen=True)
class AuditSettings(Section):
    """What decides an audit besides its inputs (the sets, the dataset, the model)."""

    section: ClassVar[str] = "audit"

    train_split: str = "train"
    holdout_split: str = "val"  # real images never trained on, to calibrate against
    quantile: float = 0.995  # flag above the holdout's conformal q-quantile
    seed: int = 0
    encoder_cache: str | None = None  # None: ~/.cache/radsynth/audit-encoders/KEY
    encoder_steps: int | None = None  # copy-encoder training steps; None: EncoderParams'
    verifier_steps: int | None = None  # pair-verifier and aligner training steps; None: their
    # params' (VerifierParams, AlignerParams)
    bf16: bool = False  # the copy encoder, pair verifier and aligner run under bf16 autocast
    # where the CPU runs bf16 natively (fp32 elsewhere: nets.bf16_inference). Opt-in: the same
    # flags on the planted sets with emulated bf16 but one copy (of 5,000, one verifier seed of
    # three); its speed is measured only on such a CPU
    forbid: tuple[str, ...] = ()  # strings that must not appear in the set
    forbid_file: str | None = None  # a file of more, one a line (e.g. source file names)
    mia_samples: int = 500  # train and held-out images each for the model attack
    dcr_limit: float = 0.6  # fail if the lower 95% bound of the share closer to train exceeds
    auc_limit: float = 0.6  # fail if an attack's lower 95% bound of AUC exceeds
    tpr_limit: float = 0.05  # fail if an attack's lower 95% bound of TPR at 1% FPR exceeds

    def forbidden(self) -> list[str]:
        """The forbidden strings: `forbid`, then the non-blank lines of `forbid_file`."""
        strings = list(self.forbid)
        if self.forbid_file:
            path = Path(self.forbid_file)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: cannot read forbidden strings ({exc})") from None
            strings += [line for line in lines if line.strip()]
        return strings

    def audit_config(self, progress: bool = True) -> AuditConfig:
        """The `run_audit` configuration these settings give (the copy encoder seeded alike)."""
        from .aligner import AlignerParams
        from .audit import AuditConfig
        from .encoder import EncoderParams
        from .verifier import VerifierParams

        encoder = EncoderParams(seed=self.seed)
        if self.encoder_steps:
            encoder.steps = self.encoder_steps
        verifier = VerifierParams(seed=self.seed)
        aligner = AlignerParams(seed=self.seed)
        if self.verifier_steps:
            verifier.steps = aligner.steps = self.verifier_steps
        return AuditConfig(
            train_split=self.train_split,
            holdout_split=self.holdout_split,
            quantile=self.quantile,
            seed=self.seed,
            encoder=encoder,
            verifier=verifier,
            aligner=aligner,
            encoder_cache=self.encoder_cache,
            bf16=self.bf16,
            forbidden=self.forbidden(),
            mia_samples=self.mia_samples,
            dcr_limit=self.dcr_limit,
            auc_limit=self.auc_limit,
            tpr_limit=self.tpr_limit,
            progress=progress,
        )
