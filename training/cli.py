"""``busi-train`` (also ``python -m training``): audit, fit, evaluate and export.

Examples::

    busi-train audit --data /path/to/busi
    busi-train fit --config busi_paper --data /path/to/busi
    busi-train fit --config busi_honest --set train.max_epochs=12 --seed 1 --fold 0
    torchrun --nproc_per_node=2 -m training fit --config busi_honest      # DDP, one process per GPU
    busi-train evaluate runs/busi-honest-seed0
    busi-train evaluate runs/busi-honest-seed0 --set eval.tta_hflip=false --out runs/busi-honest-seed0-one-pass
    busi-train explain-eval resources/models/busi-us --data /path/to/busi --busbra /path/to/BUSBRA
    busi-train export runs/busi-honest-seed0 --to resources/models/busi-us
    busi-train cv-summary runs/busi-honest-seed0-fold* --out training/reports/busi-honest-cv
    busi-train cv-compare runs/lite2-fold? --against runs/lite0-fold? --out DIR  # two recipes, same folds, paired
    busi-train replacement-rule DIR --viewer-p95-ms 83  # the pre-registered rule on that comparison
    busi-train export-onnx resources/models/busi-us     # for ONNX Runtime (packaging/build.sh does this)
    busi-train write-checksums resources/models/busi-us  # list a checked bundle's files in its SHA256SUMS
    busi-train sweep-freezing --config mammo_lite0 --data /path/to/mini-mias --seeds 0,1,2 --out training/reports/freezing-mias
    busi-train freezing-plan --arch resnet50            # what each freezing ratio freezes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.errors import BusiViewerError


def _config_path(name: str) -> Path:
    from training.config import CONFIGS_DIR

    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    return CONFIGS_DIR / f"{name}.toml"


def _comma_list(text: str, option: str, kind: type, what: str) -> tuple:
    from training.config import ConfigError

    try:
        return tuple(kind(value) for value in text.split(","))
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a comma-separated list of {what}") from None


def _seeds(text: str) -> tuple[int, ...]:
    from training.config import ConfigError

    seeds = _comma_list(text, "--seeds", int, "integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: {text!r} repeats a seed")
    return seeds


def _ratios(text: str) -> tuple[float, ...]:
    from training.config import ConfigError

    ratios = _comma_list(text, "--ratios", float, "numbers")
    if not ratios or any(not 0 <= r <= 1 for r in ratios):
        raise ConfigError(f"--ratios: every freezing ratio must lie in [0, 1], got {text!r}")
    return ratios


def _recipe(args: argparse.Namespace):
    """The config named by ``--config`` with ``--set`` overrides, its data folders replaced by ``--data`` (and
    ``--busbra``, where the command has it)."""
    import dataclasses

    from training.config import load_config

    config = load_config(_config_path(args.config), args.overrides)
    folders = {"root": args.data, "busbra_root": getattr(args, "busbra", None)}
    given = {key: str(path) for key, path in folders.items() if path is not None}
    if not given:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **given))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busi-train", description=f"{__doc__.splitlines()[0].replace('``', '')} {RESEARCH_USE_BANNER}.")
    commands = parser.add_subparsers(dest="command", required=True)

    audit = commands.add_parser("audit", help="manifest, duplicates, near-duplicate groups, burned-in annotations")
    audit.add_argument("--data", type=Path, default=None, help="BUSI root (default: $BUSI_DATA)")
    audit.add_argument("--dataset", default="busi", choices=("busi", "bus-bra", "busi+bus-bra"),
                       help="what to audit: BUSI (its groups.csv is what BUSI's grouped splits read), BUS-BRA, or "
                            "both together (near-duplicates across the sources too)")
    audit.add_argument("--busbra", type=Path, default=None, help="BUS-BRA folder (default: $BUSBRA_DATA)")
    audit.add_argument("--out", type=Path, default=None,
                       help="output folder (default: runs/audit or $BUSI_AUDIT for BUSI, runs/audit-<dataset> else)")

    frames = commands.add_parser("similar-frames",
                                 help="propose other frames of one lesion (ImageNet features + lesion structure)")
    frames.add_argument("--data", type=Path, default=None, help="BUSI root (default: $BUSI_DATA)")
    frames.add_argument("--links", type=Path, default=None,
                        help="reviewed links to show beside the candidates (e.g. training/configs/busi_same_lesion.csv)")
    frames.add_argument("--split-manifest", type=Path, default=None, help="show each image's split from this manifest")
    frames.add_argument("--out", type=Path, default=None, help="output folder (default: runs/similar-frames)")

    fit = commands.add_parser("fit", help="train one model into a run folder (resumes if it exists)")
    fit.add_argument("--config", default="busi_honest", help="config name in training/configs or a .toml path")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    fit.add_argument("--data", type=Path, default=None, help="BUSI root (default: data.root, else $BUSI_DATA)")
    fit.add_argument("--busbra", type=Path, default=None,
                     help="BUS-BRA folder of a two-source recipe (default: data.busbra_root, else $BUSBRA_DATA)")
    fit.add_argument("--seed", type=int, default=None, help="default: the config's first seed")
    fit.add_argument("--fold", type=int, default=None, help="cross-validation fold (grouped k-fold configs)")
    fit.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>-seed<S>[-fold<F>])")
    fit.add_argument("--evaluate", action="store_true", help="evaluate right after fitting")
    fit.add_argument("--no-progress", action="store_true")

    evaluate = commands.add_parser("evaluate", help="metrics, calibration, explanations, figures, report.md")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE",
                          help="evaluate the run's weights under another inference setting (e.g. "
                               "eval.tta_hflip=false); needs --out")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="with --set: a new folder for the re-predicted run (the run's own is never rewritten)")
    evaluate.add_argument("--no-progress", action="store_true")

    external = commands.add_parser("score-external",
                                   help="score an evaluated run on a source it never saw (leave-one-source-out)")
    external.add_argument("run", type=Path, help="an evaluated run folder, or a model bundle with --bundle")
    external.add_argument("--source", required=True, choices=("busi", "bus-bra"))
    external.add_argument("--bundle", action="store_true",
                          help="RUN is an installed model bundle (its card's calibration); results go to --out")
    external.add_argument("--out", type=Path, default=None, help="with --bundle: output folder (default: runs/)")
    external.add_argument("--data", type=Path, default=None,
                          help="that source's folder (default: $BUSI_DATA or $BUSBRA_DATA)")
    external.add_argument("--no-progress", action="store_true")

    explain = commands.add_parser("explain-eval",
                                  help="heatmap-vs-mask agreement of a bundle or run by source and lesion size")
    explain.add_argument("target", type=Path, help="a model bundle or an evaluated run folder")
    explain.add_argument("--data", type=Path, default=None, help="BUSI root (default: data.root, else $BUSI_DATA)")
    explain.add_argument("--busbra", type=Path, default=None, help="BUS-BRA folder (default: $BUSBRA_DATA)")
    explain.add_argument("--split", default="test", choices=("test", "val"), help="which split of its manifest")
    explain.add_argument("--out", type=Path, default=None, help="output folder (default: runs/explain-eval)")
    # choices: architectures.OUTPUT_STRIDES, written out so that parsing arguments does not import torch
    explain.add_argument("--output-stride", type=int, choices=(32, 16), default=None,
                         help="run the weights at this final stride instead of the card's (16: a finer grid)")
    explain.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                         help="average with the mirror image (or not), instead of as the card says")
    explain.add_argument("--no-progress", action="store_true")

    export = commands.add_parser("export", help="turn an evaluated run into a model bundle")
    export.add_argument("run", type=Path)
    export.add_argument("--to", type=Path, default=None, help="bundle folder (default: the app's default model)")
    export.add_argument("--name", default="busi-us")
    export.add_argument("--version", default="1.0.0")
    export.add_argument("--force", action="store_true", help="replace an existing bundle")
    export.add_argument("--no-scope", action="store_true",
                        help="skip fitting the scope guard (it needs the training data; fit it later with fit-scope)")

    scope = commands.add_parser("fit-scope", help="fit a bundle's scope guard on its training images (see README)")
    scope.add_argument("bundle", type=Path)
    scope.add_argument("--data", type=Path, default=None,
                       help="folder of the bundle's (first) data set (default: $BUSI_DATA / $MIAS_DATA / $BUSBRA_DATA)")
    scope.add_argument("--busbra", type=Path, default=None, help="BUS-BRA folder (default: $BUSBRA_DATA)")
    scope.add_argument("--components", type=int, default=None, help="principal directions (default: 64)")
    scope.add_argument("--margin", type=float, default=None,
                       help="widen both thresholds by this factor >= 1 (default: eval.scope_margin of the bundle's "
                            "config)")

    scope_eval = commands.add_parser("scope-eval", help="flag rates of a bundle's scope guard on folders of images")
    scope_eval.add_argument("bundle", type=Path)
    scope_eval.add_argument("--set", dest="sets", action="append", required=True, metavar="NAME=FOLDER",
                            help="a named folder of images (searched recursively); repeat for several")

    onnx = commands.add_parser("export-onnx", help="add an ONNX export (checked against torch) to a model bundle")
    onnx.add_argument("bundle", type=Path, nargs="?", default=None, help="bundle folder (default: the app's default)")
    onnx.add_argument("--out", type=Path, default=None, help="write the export here instead of into the bundle")

    sums = commands.add_parser("write-checksums",
                               help="list every file of a model bundle in its SHA256SUMS (for a bundle without one)")
    sums.add_argument("bundle", type=Path)
    sums.add_argument("--accept-changes", action="store_true",
                      help="also list files that changed since SHA256SUMS was written (after checking them)")

    sweep = commands.add_parser("sweep-freezing", help="one model per freezing ratio; table and plot of AUC vs ratio")
    sweep.add_argument("--config", required=True, help="config name in training/configs or a .toml path")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    sweep.add_argument("--data", type=Path, default=None, help="dataset root (default: data.root, else its env var)")
    sweep.add_argument("--ratios", default="0,0.25,0.5,0.75", help="comma-separated freezing ratios in [0, 1]")
    sweep.add_argument("--seeds", default=None,
                       help="comma-separated seeds, one repetition each: it draws the split (replacing split.seed) "
                            "and trains with it (default: the recipe's first seed)")
    sweep.add_argument("--runs", type=Path, default=None, help="where the run folders go (default: runs/)")
    sweep.add_argument("--out", type=Path, required=True, help="folder for freezing_sweep.{md,json,png}")
    sweep.add_argument("--no-progress", action="store_true")

    plan = commands.add_parser("freezing-plan", help="stages and parameters each freezing ratio freezes")
    plan.add_argument("--arch", default=None, help="one architecture (default: all supported)")
    plan.add_argument("--ratios", default="0,0.25,0.5,0.75,1")

    cv = commands.add_parser("cv-summary", help="mean ± sd over evaluated cross-validation runs of one recipe")
    cv.add_argument("runs", type=Path, nargs="+")
    cv.add_argument("--out", type=Path, required=True, help="folder for cv_summary.json and cv_summary.md")

    compare = commands.add_parser("cv-compare", help="two recipes on the same folds: paired differences per source")
    compare.add_argument("runs", type=Path, nargs="+", help="the candidate recipe's evaluated fold runs")
    compare.add_argument("--against", type=Path, nargs="+", required=True,
                         help="the reference recipe's evaluated runs of the same folds")
    compare.add_argument("--out", type=Path, required=True, help="folder for cv_compare.json and cv_compare.md")

    rule = commands.add_parser("replacement-rule",
                               help="the pre-registered rule: does the compared candidate replace the reference?")
    rule.add_argument("compare_dir", type=Path, help="a cv-compare --out folder; the verdict is written beside it")
    rule.add_argument("--viewer-p95-ms", type=float, required=True,
                      help="never-seen p95 of the viewer with a candidate bundle (bench/viewer_bench.py)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (BusiViewerError, FileNotFoundError) as exc:
        print(f"busi-train: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "audit":
        from training.audit import run_audit
        from training.data import resolve_data_root
        from training.pipeline import default_audit_dir

        if args.dataset == "busi":
            result = run_audit(resolve_data_root(args.data), args.out or default_audit_dir())
        else:
            from training.audit import index_items
            from training.data import index_dataset
            from training.pipeline import source_audit_dir

            roots = {"busi": args.data, "bus-bra": args.busbra}
            index = index_dataset(args.dataset, roots[args.dataset] if args.dataset in roots else None,
                                  "three-class", roots=roots)
            result = run_audit(index.root, args.out or source_audit_dir(args.dataset), items=index_items(index),
                               title=args.dataset)
        print(result.files["summary.md"].read_text(encoding="utf-8") if "summary.md" in result.files
              else f"audit written to {result.out_dir}")
        return 0
    if args.command == "similar-frames":
        from training.data import resolve_data_root
        from training.pipeline import RUNS_DIR, default_audit_dir
        from training.similar_frames import find_similar_frames

        pairs = find_similar_frames(resolve_data_root(args.data), default_audit_dir() / "groups.csv",
                                    args.out or RUNS_DIR / "similar-frames", args.links, args.split_manifest)
        for a, b, similarity in pairs:
            print(f"{similarity:.3f}  {a}  |  {b}")
        return 0
    if args.command == "fit":
        from training.evaluate import run_evaluate
        from training.pipeline import RUNS_DIR, run_fit

        config = _recipe(args)
        seed = config.train.seeds[0] if args.seed is None else args.seed
        name = f"{config.name}-seed{seed}" + (f"-fold{args.fold}" if args.fold is not None else "")
        out = args.out or RUNS_DIR / name
        summary = run_fit(config, out, seed=seed, fold=args.fold, progress=not args.no_progress)
        if summary:
            print(json.dumps(summary, indent=2))
            if args.evaluate:
                run_evaluate(out)
                print(f"metrics and report written to {out}")
        return 0
    if args.command == "evaluate":
        from training.evaluate import run_evaluate

        run = args.run
        if args.overrides or args.out:
            from training.repredict import RepredictError, repredict_run

            if not (args.overrides and args.out):
                raise RepredictError("--set and --out go together: a re-evaluation under other settings needs "
                                     "its own folder")
            run = repredict_run(args.run, args.out, args.overrides, progress=not args.no_progress)
        results = run_evaluate(run)
        print(json.dumps({k: results["test"][k] for k in ("n", "accuracy", "macro_f1", "auc_macro", "ece")}, indent=2))
        return 0
    if args.command == "score-external":
        from training.external import score_bundle, score_external
        from training.pipeline import RUNS_DIR

        if args.bundle:
            block = score_bundle(args.run, args.source, args.data, args.out or RUNS_DIR, progress=not args.no_progress)
        else:
            block = score_external(args.run, args.source, args.data, progress=not args.no_progress)
        m = block["metrics"]
        positive = m["decision"]["class"] if isinstance(m["decision"], dict) else m["class_names"][-1]
        print(json.dumps({"source": block["source"], "n": block["n"], f"auc_{positive}": m["per_class"][positive]["auc"],
                          **{k: m.get(k) for k in (f"sensitivity_{positive}", f"specificity_{positive}", "ece")}},
                         indent=2))
        return 0
    if args.command == "explain-eval":
        from training.explain_measure import measure_explanations
        from training.pipeline import RUNS_DIR

        result = measure_explanations(args.target, args.out or RUNS_DIR / "explain-eval",
                                      {"busi": args.data, "bus-bra": args.busbra}, args.split,
                                      progress=not args.no_progress, output_stride=args.output_stride,
                                      mirror=args.mirror)
        cells = result["breakdown"]["by_source"]
        print(json.dumps({source: {cell: {k: block.get(k) for k in ("n", "pointing_game", "baseline_pointing_game")}
                                   for cell, block in blocks.items()} for source, blocks in cells.items()}, indent=2))
        print(f"scored {result['n_lesion_images']} lesion images in {result['seconds']['scoring']:.0f} s")
        return 0
    if args.command == "export":
        from busi_viewer.core.paths import default_model_dir
        from training.export import run_export

        bundle = args.to or default_model_dir()
        card = run_export(args.run, bundle, args.name, args.version, overwrite=args.force)
        print(f"bundle {card.name} {card.version} written (weights sha256 {card.weights_sha256[:12]}…)")
        if not args.no_scope:
            from training.config import load_config
            from training.scope_fit import fit_bundle_scope

            data = load_config(args.run / "config.toml").data
            fit = fit_bundle_scope(bundle, Path(data.root) if data.root else None,
                                   Path(data.busbra_root) if data.busbra_root else None)
            print(f"scope check fitted: {json.dumps(fit.summary['flagged']['test'])}")
        return 0
    if args.command == "fit-scope":
        from training.scope_fit import DEFAULT_COMPONENTS, fit_bundle_scope

        fit = fit_bundle_scope(args.bundle, args.data, args.busbra, args.components or DEFAULT_COMPONENTS,
                               margin=args.margin)
        print(json.dumps({k: fit.summary[k] for k in ("margin", "fitted_on", "flagged")}, indent=2))
        return 0
    if args.command == "scope-eval":
        from busi_viewer.core.scan import scan_folder
        from training.scope_fit import score_folders

        sets = {}
        for entry in args.sets:
            name, sep, folder = entry.partition("=")
            if not sep or not name or not folder:
                raise BusiViewerError(f"--set takes NAME=FOLDER, got {entry!r}")
            sets[name] = scan_folder(Path(folder)).images
        print(json.dumps(score_folders(args.bundle, sets), indent=2))
        return 0
    if args.command == "export-onnx":
        from busi_viewer.core.paths import default_model_dir
        from busi_viewer.inference.onnx_export import export_onnx

        record = export_onnx(args.bundle or default_model_dir(), args.out)
        print(f"ONNX export written (sha256 {record.onnx_sha256[:12]}…); largest difference from torch: "
              f"{record.max_abs_difference_probabilities:.1e} (probabilities), "
              f"{record.max_abs_difference_maps:.1e} (Grad-CAM maps)")
        return 0
    if args.command == "write-checksums":
        from busi_viewer.inference.bundle_files import CHECKSUMS_FILENAME, write_bundle_checksums

        listing = write_bundle_checksums(args.bundle, accept_changes=args.accept_changes)
        print(f"{CHECKSUMS_FILENAME} of {args.bundle} lists {len(listing)} files")
        return 0
    if args.command == "sweep-freezing":
        from training.pipeline import RUNS_DIR
        from training.sweep import sweep_freezing

        config = _recipe(args)
        rows = sweep_freezing(config, _ratios(args.ratios), args.runs or RUNS_DIR, args.out,
                              seeds=_seeds(args.seeds) if args.seeds else (), progress=not args.no_progress)
        print((args.out / "freezing_sweep.md").read_text(encoding="utf-8"))
        return 0 if rows else 1
    if args.command == "freezing-plan":
        from busi_viewer.inference.architectures import SUPPORTED_ARCHITECTURES, build_classifier
        from training.freezing import freezing_plan

        print("| architecture | ratio | stages frozen | backbone parameters frozen |\n|---|---|---|---|")
        for arch in [args.arch] if args.arch else SUPPORTED_ARCHITECTURES:
            model = build_classifier(arch, 2)
            for ratio in _ratios(args.ratios):
                p = freezing_plan(model, ratio)
                print(f"| {arch} | {ratio:.2f} | {p.frozen_stages} of {p.stages} | {p.frozen_parameters:,} of "
                      f"{p.backbone_parameters:,} ({100 * p.frozen_fraction_of_backbone:.1f} %) |")
        return 0
    if args.command == "cv-summary":
        from training.cv import cv_markdown, write_cv_summary

        print(cv_markdown(write_cv_summary(args.runs, args.out)))
        return 0
    if args.command == "cv-compare":
        from training.cv_compare import compare_markdown, write_cv_compare

        print(compare_markdown(write_cv_compare(args.runs, args.against, args.out)))
        return 0
    if args.command == "replacement-rule":
        from training.replacement_rule import rule_markdown, write_rule

        print(rule_markdown(write_rule(args.compare_dir, args.viewer_p95_ms)))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
