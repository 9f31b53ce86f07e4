"""`radsynth release`: publish an audited synthetic set (refused unless its audit passed)."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "release", help="release an audited synthetic set (gate, exports, datasheet, DVC)"
    )
    parser.add_argument("--set", dest="set_dir", required=True, help="generated set directory")
    parser.add_argument("--report", required=True, help="audit report directory of that set")
    parser.add_argument(
        "--screening-report",
        help="audit of the whole generated set whose flagged images were removed to make --set "
        "(recorded in lineage and datasheet)",
    )
    parser.add_argument("--name", required=True, help="release name (directory and tag name)")
    parser.add_argument(
        "--out", default="releases", help="folder holding releases (default: releases)"
    )
    parser.add_argument("--model", help="model run that generated the set (for lineage)")
    parser.add_argument("--data", help="dataset the model was trained on (for lineage and labels)")
    parser.add_argument(
        "--params", default="params.yaml", help="params file to hash into the lineage"
    )
    parser.add_argument(
        "--evaluation",
        help="`radsynth evaluate` output of the set: fidelity and detectability in the datasheet",
    )
    parser.add_argument(
        "--utility",
        help="utility.json of `radsynth bench utility` on the set: the datasheet's 'How to use "
        "this set' names the recipe measured to help and its gain",
    )
    parser.add_argument(
        "--export",
        action="append",
        choices=("datalist", "dicom", "nifti"),
        help="extra export formats (repeatable; default: datalist and dicom). PNG+CSV always.",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a release of the same name"
    )
    parser.add_argument(
        "--version-control",
        choices=("auto", "none"),
        default="auto",
        help="auto: dvc add + push and a git tag where possible; none: e.g. when DVC tracks it as a stage output",
    )
    parser.add_argument(
        "--remote", help="DVC remote to push to (default: the project's default remote)"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from privacy_audit.gate import GateError

    from ..release.build import DEFAULT_EXPORTS, ReleaseInputs, make_release
    from ..release.versioning import VersioningError, version_release

    inputs = ReleaseInputs(
        set_dir=Path(args.set_dir),
        report_dir=Path(args.report),
        screening_report_dir=Path(args.screening_report) if args.screening_report else None,
        name=args.name,
        out_root=Path(args.out),
        model_dir=Path(args.model) if args.model else None,
        dataset_dir=Path(args.data) if args.data else None,
        params_file=Path(args.params) if args.params else None,
        exports=tuple(args.export) if args.export else DEFAULT_EXPORTS,
        overwrite=args.overwrite,
        evaluation_dir=Path(args.evaluation) if args.evaluation else None,
        utility_file=Path(args.utility) if args.utility else None,
    )
    try:
        release = make_release(inputs)
    except GateError as exc:
        print(f"radsynth release: refused: {exc}", file=sys.stderr)
        return 3
    print(f"release written: {release}")
    if args.version_control == "auto":
        try:
            done = version_release(release, remote=args.remote)
        except VersioningError as exc:
            print(
                f"radsynth release: the release is complete but versioning failed: {exc}",
                file=sys.stderr,
            )
            return 4
        if done["dvc"]:
            print(
                f"versioned: {done['dvc']} pushed to {done['pushed_to']}; git tag {done['git_tag']}"
            )
    return 0
