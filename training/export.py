"""``busi-train export``: a run folder becomes a model bundle the app loads (weights, card, split, report)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from pathlib import Path

import torch

from busi_viewer import __version__
from busi_viewer.inference.architectures import build_classifier
from busi_viewer.inference.bundle import BUNDLE_DOCUMENTS, save_bundle
from busi_viewer.inference.model_card import ModelCard
from training.busbra import CITATION as BUSBRA_CITATION
from training.config import load_config, to_toml
from training.report import split_sizes_text
from training.engine import BEST_WEIGHTS

# Calibrated top-class probability under which the app shows "low confidence": with three classes, a top
# probability below 0.6 means the model gives the other two together at least 40 %; with two, 0.7 means the
# other class has at least 30 %.
LOW_CONFIDENCE_BELOW = {3: 0.6, 2: 0.7}
# What each dataset (config data.dataset) is, as cards and reports state it.
MODALITY = {"busi": "US", "bus-bra": "US", "busi+bus-bra": "US", "mini-mias": "MG"}
SUBJECT = {"busi": "breast ultrasound", "bus-bra": "breast ultrasound", "busi+bus-bra": "breast ultrasound",
           "mini-mias": "mammograms"}
SPLIT_GROUPS = {"busi": "near-duplicate groups", "bus-bra": "patients",  # what a grouped split keeps together
                "busi+bus-bra": "near-duplicate groups (BUSI) and patients (BUS-BRA)", "mini-mias": "patients"}
DATASET_CITATION = {
    "busi": "BUSI (Al-Dhabyani et al., Data in Brief 28, 2020; Baheya Hospital, Cairo)",
    "bus-bra": BUSBRA_CITATION,
    "busi+bus-bra": f"BUSI (Al-Dhabyani et al., Data in Brief 28, 2020; Baheya Hospital, Cairo) and {BUSBRA_CITATION}",
    "mini-mias": "mini-MIAS (Suckling et al., Excerpta Medica ICS 1069, 1994; 200 µm film-screen digitisations)",
}


def card_for_run(run_dir: Path, name: str, version: str) -> ModelCard:
    """The model card of an evaluated run: preprocessing from its config, numbers from its metrics.json."""
    config = load_config(run_dir / "config.toml")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    fit_info, point = metrics["run"], metrics["operating_point"]
    test = metrics["test"]
    positive = config.positive_class
    keys = ("accuracy", "macro_f1", "auc_macro", "ece", f"sensitivity_{positive}", f"specificity_{positive}")
    headline = {key: test.get(key) for key in keys}
    headline["confidence_intervals"] = test["bootstrap"]["intervals"]
    headline["n_test"] = test["n"]
    # Every number per source, and on sources the model never saw: what a clinic's own images are closest to.
    for key, label in (("test_by_source", "by_source"), ("external", "external")):
        if metrics.get(key):
            headline[label] = {name: {k: block.get(k) for k in ("n", *keys, f"auc_{positive}")}
                               for name, block in metrics[key].items()}
    if "explanations" in metrics:
        lesion_classes = [k for k in metrics["explanations"]["per_class"] if k != "normal"]
        headline["explanations"] = {k: metrics["explanations"]["per_class"][k] for k in lesion_classes}
    fractions = "/".join(str(f) for f in config.split.fractions)
    links = config.split.lesion_links
    protocol = (f"{config.name}: {config.description}. Task {config.data.task}; split {config.split.strategy} "
                f"(whole {SPLIT_GROUPS[config.data.dataset]}) {fractions} (seed {config.split.seed}); "
                f"seed {fit_info['seed']}; best epoch {fit_info['best_epoch']} of {fit_info['epochs_run']}; "
                f"{_freezing_text(fit_info)}"
                + (f"reviewed other frames of one lesion kept together ({links}); " if links else "")
                + f"temperature{f' and {positive} threshold' if point.get('threshold') is not None else ''} fitted "
                f"on validation; numbers on the held-out test split ({test['n']} images) with percentile "
                f"bootstrap 95% CIs.")
    return ModelCard(
        name=name, version=version, architecture=config.model.arch, class_names=config.class_names,
        preprocess=config.preprocess_spec(), modality=MODALITY[config.data.dataset],
        data_manifest_sha256=fit_info["data_manifest_sha256"],
        training_data=(f"{DATASET_CITATION[config.data.dataset]}: {fit_info['n_images']} images "
                       f"({split_sizes_text(fit_info['split_sizes'])})"),
        protocol=protocol, metrics={"test": headline},
        calibration_temperature=float(point["temperature"]),
        thresholds={positive: float(point["threshold"])} if point.get("threshold") is not None else {},
        low_confidence_below=LOW_CONFIDENCE_BELOW.get(len(config.class_names), 0.5),
        test_time_flip=config.eval.tta_hflip,  # the app runs the model as its numbers were measured
        output_stride=config.model.output_stride,
        intended_use=_intended_use(config),
        created=f"{dt.date.today().isoformat()} with busi-viewer {__version__}",
    )


def _intended_use(config) -> str:
    subject = SUBJECT[config.data.dataset]
    if config.data.lesion_crops:
        subject = ("regions of interest cropped around a known lesion in mammograms (trained on lesion-centred "
                   "crops: whole films are out of scope)")
    return f"Research on explainable classification of {subject}. Not for diagnostic use."


def _freezing_text(fit_info: dict) -> str:
    plan = fit_info.get("freezing") or {}
    if not plan.get("stages"):
        return ""
    return (f"freezing ratio {plan['ratio']:g} ({plan['frozen_stages']} of {plan['stages']} backbone stages, "
            f"{plan['frozen_parameters']:,} parameters, frozen); ")


def run_export(run_dir: Path, bundle_dir: Path, name: str = "busi-us", version: str = "1.0.0",
               overwrite: bool = False) -> ModelCard:
    """Write the bundle (atomically, via :func:`save_bundle`) plus the run's manifest, report and figures."""
    run_dir, bundle_dir = Path(run_dir), Path(bundle_dir)
    card = card_for_run(run_dir, name, version)
    model = build_classifier(card.architecture, card.num_classes, output_stride=card.output_stride)
    model.load_state_dict(torch.load(run_dir / BEST_WEIGHTS, map_location="cpu", weights_only=True))
    with tempfile.TemporaryDirectory() as scratch:
        documents = [run_dir / doc for doc in BUNDLE_DOCUMENTS if (run_dir / doc).is_file()]
        documents = [write_without_local_paths(doc, Path(scratch)) for doc in documents]
        return save_bundle(bundle_dir, model, card, overwrite=overwrite, documents=documents)


def write_without_local_paths(document: Path, folder: Path) -> Path:
    """``document`` as a bundle ships it: config.toml without its data and cache folders, metrics.json without
    the folders and cache file of this machine (the data set's name and manifest hash stay); other files as
    they are. Returns the path to ship (a copy in ``folder`` when something was removed)."""
    if document.name == "config.toml":
        config = load_config(document)
        public = dataclasses.replace(config, data=dataclasses.replace(config.data, root="", busbra_root="",
                                                                      cache_dir=""))
        text = to_toml(public)
    elif document.name == "metrics.json":
        metrics = json.loads(document.read_text(encoding="utf-8"))
        run = metrics.get("run", {})
        for key in ("data_root", "data_roots"):
            run.pop(key, None)
        run.get("cache", {}).pop("path", None)
        audit = metrics.get("duplicates", {}).get("audit")
        if audit and Path(audit).is_absolute():
            metrics["duplicates"]["audit"] = f"the audit's {Path(audit).name}"
        text = json.dumps(metrics, indent=2)
    else:
        return document
    out = folder / document.name
    out.write_text(text, encoding="utf-8")
    return out
