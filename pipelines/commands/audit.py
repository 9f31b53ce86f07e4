"""`radsynth audit`: the privacy audit of a synthetic set before release (privacy_audit)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privacy_audit.report import AuditReport


def register(sub) -> None:
    from privacy_audit.config import BF16_HELP, AuditSettings

    d = AuditSettings()  # the defaults' home: a profile's `audit:` section sets the same fields
    parser = sub.add_parser(
        "audit",
        help="privacy audit of a synthetic set: copies, membership inference, metadata leaks",
        description="Audit a synthetic set against its model's training dataset, writing "
        "REPORT_DIR/report.json + report.html (+ audit.log); exit status 0: pass, 1: fail.",
    )
    parser.add_argument(
        "--synthetic",
        required=True,
        metavar="DIR",
        help="generated set (images/*.png + manifest.csv) or a folder of PNGs",
    )
    parser.add_argument("--data", required=True, metavar="DATASET", help="training dataset")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report directory")
    parser.add_argument("--train-split", default=d.train_split)
    parser.add_argument(
        "--holdout-split",
        default=d.holdout_split,
        help=f"real images never trained on, to calibrate against (default {d.holdout_split})",
    )
    parser.add_argument("--model", metavar="RUN", help="trained model run: also attack the model")
    parser.add_argument(
        "--filtered-out",
        metavar="DIR2",
        help="also write a copy of the set without the flagged images",
    )
    parser.add_argument(
        "--filtered-report",
        metavar="DIR3",
        help="audit the filtered copy at once into DIR3 (needs --filtered-out); the exit "
        "status is then that audit's verdict: the filtered copy is what would be released",
    )
    parser.add_argument(
        "--quantile",
        type=float,
        default=d.quantile,
        help="flag above this conformal quantile of held-out scores",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--encoder-cache",
        metavar="DIR",
        default=d.encoder_cache,
        help="where the copy encoder is cached (default ~/.cache/radsynth)",
    )
    parser.add_argument(
        "--encoder-steps", type=int, default=d.encoder_steps, help="copy-encoder steps, per round"
    )
    parser.add_argument(
        "--verifier-steps", type=int, default=d.verifier_steps, help="verifier, aligner steps"
    )
    parser.add_argument(
        "--forbid",
        action="append",
        default=list(d.forbid),
        metavar="STRING",
        help="a string that must not appear in the set (repeatable)",
    )
    parser.add_argument(
        "--forbid-file",
        metavar="FILE",
        default=d.forbid_file,
        help="file of forbidden strings, one a line (e.g. source file names)",
    )
    parser.add_argument(
        "--mia-samples",
        type=int,
        default=d.mia_samples,
        help="train and held-out images each for the model attack",
    )
    parser.add_argument("--dcr-limit", type=float, default=d.dcr_limit)
    parser.add_argument("--auc-limit", type=float, default=d.auc_limit)
    parser.add_argument("--tpr-limit", type=float, default=d.tpr_limit)
    parser.add_argument("--bf16", action="store_true", help=BF16_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def load_probe(run_dir: str):
    """The trained model as a DiffusionModelProbe, through generation.load_model."""
    from privacy_audit.membership import DiffusionModelProbe

    try:
        import generation
    except ImportError as exc:
        raise ValueError(f"--model {run_dir}: cannot import generation ({exc})") from None
    loader = getattr(generation, "load_model", None)
    if loader is None:
        raise ValueError(
            f"--model {run_dir}: this installation has no generation.load_model, so the model "
            "cannot be attacked; run the audit without --model"
        )
    model = loader(run_dir)
    if not isinstance(model, DiffusionModelProbe):
        raise ValueError(f"--model {run_dir}: the loaded model has no denoising_error method")
    return model


def run(args) -> int:
    import torch

    from privacy_audit.audit import run_audit
    from privacy_audit.config import AuditSettings

    torch.set_num_threads(min(2, torch.get_num_threads()))
    settings = AuditSettings.from_namespace(args, "radsynth audit")
    config = settings.audit_config(progress=not args.no_progress)
    probe, model_info = None, None
    if args.model:
        probe = load_probe(args.model)
        model_info = {"run": Path(args.model).name}
        trained_on = (getattr(probe, "config", None) or {}).get("dataset", {}).get("hash")
        if trained_on:
            from conditioning.dataset import load_dataset

            data_hash = load_dataset(args.data).content_hash()
            if trained_on != data_hash:
                raise ValueError(
                    f"--model {args.model} was trained on another dataset (hash "
                    f"{trained_on[:12]}...) than {args.data} ({data_hash[:12]}...): membership "
                    "inference needs the model's own training data"
                )
            model_info["dataset_hash"] = trained_on
    if args.filtered_report and not args.filtered_out:
        raise ValueError("--filtered-report needs --filtered-out DIR2 (the copy it audits)")
    report = run_audit(
        args.synthetic,
        args.data,
        args.out,
        config,
        probe,
        model_info,
        args.filtered_out,
        args.filtered_report,
    )
    return _print_outcome(report, args)


def _print_outcome(report: AuditReport, args) -> int:
    """The verdict and its reasons (and the filtered copy's); the exit status they give."""
    from privacy_audit.report import REPORT_HTML

    copy = report.summary.copy_detection
    print(
        f"verdict: {report.verdict}  ({copy.flagged} of {copy.synthetic_images} "
        f"images flagged; report {Path(args.out) / REPORT_HTML})"
    )
    for reason in report.reasons:
        print(f"  - {reason}")
    if args.filtered_out:
        print(f"filtered copy without the flagged images: {args.filtered_out}")
    again = report.filtered
    if again is not None:
        print(
            f"filtered copy audited: verdict {again.verdict} ({again.images} images; "
            f"report {Path(args.filtered_report) / REPORT_HTML})"
        )
        for reason in again.reasons:
            print(f"  - {reason}")
        return 0 if again.verdict == "pass" else 1
    return 0 if report.passed else 1
