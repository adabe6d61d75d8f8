"""``busi-train sweep-freezing``: one model per freezing ratio and seed, then tables and a plot of AUC against ratio.

A repetition is one seed: it draws the patient-level (or group-level) split with that seed and trains with it, so
repetitions differ in which patients are held out as well as in training's randomness, while every ratio of one
repetition shares its split and seed (only ``model.freeze_ratio`` differs: the comparison is paired). Every run is
evaluated as any run and contributes its test AUC of the positive class with the bootstrap CI its evaluation
computed (resampling patients or near-duplicate groups as the recipe says), plus what the ratio froze. With more
than one seed the summary gives each ratio's mean, standard deviation and range over seeds, and how often it had
the best validation AUC of its repetition (what choosing a ratio on validation would have done).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.atomic import atomic_write
from training.config import ConfigError, TrainConfig, config_hash, load_config, to_toml

DEFAULT_RATIOS = (0.0, 0.25, 0.5, 0.75)


def run_folder(out_root: Path, config: TrainConfig, ratio: float, seed: int) -> Path:
    return out_root / f"{config.name}-freeze{int(round(ratio * 100)):02d}-seed{seed}"


def sweep_variant(config: TrainConfig, ratio: float, seed: int) -> TrainConfig:
    """``config`` at one freezing ratio, with its split drawn by ``seed``."""
    return dataclasses.replace(config, description=f"{config.description}; freezing ratio {ratio:g}",
                               model=dataclasses.replace(config.model, freeze_ratio=float(ratio)),
                               split=dataclasses.replace(config.split, seed=seed))


def sweep_freezing(config: TrainConfig, ratios: tuple[float, ...], runs_dir: Path, out: Path, *,
                   seeds: tuple[int, ...] = (), progress: bool = False) -> list[dict]:
    """Fit and evaluate ``config`` at every ratio for every seed (default: the recipe's first seed), resuming
    finished runs of the same recipe and refusing a finished run of another, then write ``out/freezing_sweep.json``,
    ``out/freezing_sweep.md`` and ``out/freezing_sweep.png``. Returns one row per run."""
    from training.evaluate import run_evaluate
    from training.pipeline import run_fit

    seeds = tuple(seeds) or (config.train.seeds[0],)
    rows = []
    for seed in seeds:
        for ratio in ratios:
            variant = sweep_variant(config, ratio, seed)
            folder = run_folder(runs_dir, config, ratio, seed)
            if (folder / "metrics.json").is_file():
                _check_same_recipe(folder, variant)
            else:
                run_fit(variant, folder, seed=seed, progress=progress)
                run_evaluate(folder, progress=progress)
            rows.append(_row(folder, ratio, seed, variant.positive_class))
    summary = summarise(rows) if len(seeds) > 1 else []
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "freezing_sweep.json", encoding="utf-8") as handle:
        json.dump({"config": to_toml(config), "seeds": list(seeds), "rows": rows, "summary": summary}, handle,
                  indent=2)
    with atomic_write(out / "freezing_sweep.md", encoding="utf-8") as handle:
        handle.write(sweep_table(config, rows, seeds, summary))
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    plot_sweep(rows, summary, out / "freezing_sweep.png", f"{config.name}: test AUC vs freezing ratio ({seed_text})")
    return rows


def _check_same_recipe(folder: Path, variant: TrainConfig) -> None:
    # The folder's recipe as read today (fields added since it ran take their defaults), not the hash it recorded.
    ran = config_hash(load_config(folder / "config.toml"))
    if ran != config_hash(variant):
        raise ConfigError(f"{folder} holds a finished run of another recipe (config hash {ran}, the sweep's "
                          f"{config_hash(variant)}); move it away or pass another --runs folder")


def _row(folder: Path, ratio: float, seed: int, positive: str) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    test, fit = metrics["test"], metrics["run"]
    key = f"auc_{positive}"
    interval = test["bootstrap"]["intervals"].get(key, {})
    freezing = fit.get("freezing", {})
    return {
        "ratio": ratio, "seed": seed, "run": folder.name, "positive_class": positive,
        "auc": test["per_class"][positive]["auc"], "auc_low": interval.get("low"), "auc_high": interval.get("high"),
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n_test": test["n"],
        "validation_auc": metrics["validation"]["per_class"][positive]["auc"], "n_validation": metrics["validation"]["n"],
        "frozen_stages": freezing.get("frozen_stages"), "stages": freezing.get("stages"),
        "frozen_parameters": freezing.get("frozen_parameters"), "backbone_parameters": freezing.get("backbone_parameters"),
        "best_epoch": fit["best_epoch"], "fit_seconds": fit["fit_seconds"],
    }


def _spread(values: list[float | None]) -> dict:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    sd = statistics.stdev(known) if len(known) > 1 else None
    return {"mean": statistics.fmean(known), "sd": sd, "min": min(known), "max": max(known), "n": len(known)}


def summarise(rows: list[dict]) -> list[dict]:
    """Per ratio: test and validation AUC over seeds (mean, sd, range), mean accuracy and fit time, and in how
    many repetitions the ratio had the best validation AUC (ties count for every tied ratio)."""
    ratios = sorted({r["ratio"] for r in rows})
    best_on_validation = {ratio: 0 for ratio in ratios}
    for seed in {r["seed"] for r in rows}:
        scored = [r for r in rows if r["seed"] == seed and r["validation_auc"] is not None]
        if scored:
            top = max(r["validation_auc"] for r in scored)
            for r in scored:
                best_on_validation[r["ratio"]] += r["validation_auc"] == top
    summary = []
    for ratio in ratios:
        runs = [r for r in rows if r["ratio"] == ratio]
        summary.append({
            "ratio": ratio, "seeds": [r["seed"] for r in runs], "test_auc": _spread([r["auc"] for r in runs]),
            "validation_auc": _spread([r["validation_auc"] for r in runs]),
            "accuracy_mean": statistics.fmean(r["accuracy"] for r in runs),
            "fit_seconds_mean": statistics.fmean(r["fit_seconds"] for r in runs),
            "best_on_validation": best_on_validation[ratio],
            "frozen_stages": runs[0]["frozen_stages"], "stages": runs[0]["stages"],
        })
    return summary


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_sd(spread: dict) -> str:
    return f"{_num(spread['mean'])} ± {_num(spread['sd'])} ({_num(spread['min'], 2)}–{_num(spread['max'], 2)})"


def sweep_table(config: TrainConfig, rows: list[dict], seeds: tuple[int, ...], summary: list[dict]) -> str:
    """The sweep as Markdown: the summary over seeds (when there are several), then one row per run."""
    positive = rows[0]["positive_class"] if rows else "?"
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    lines = [f"# Freezing-ratio sweep: {config.name}", "", f"**{RESEARCH_USE_BANNER}.**", "",
             f"{config.description}. Task {config.data.task} on {config.data.dataset}; {seed_text}. Each seed draws "
             "one split (by patient or near-duplicate group) and trains with it; every ratio of a seed shares that "
             f"split. AUC is of p({positive}) on the held-out test split with a percentile bootstrap 95 % CI "
             "(resampling groups as the recipe says); validation AUC for comparison.", ""]
    if summary:
        lines += ["## Over seeds", "",
                  "| freezing ratio | stages frozen | test AUC mean ± sd (range) | validation AUC mean ± sd (range) "
                  "| mean accuracy | best validation AUC of its seed | mean fit s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {s['ratio']:.2f} | {s['frozen_stages']} of {s['stages']} | {_mean_sd(s['test_auc'])} "
                  f"| {_mean_sd(s['validation_auc'])} | {_num(s['accuracy_mean'])} "
                  f"| {s['best_on_validation']} of {len(s['seeds'])} | {s['fit_seconds_mean']:.0f} |" for s in summary]
        lines += ["", "## Every run", ""]
    lines += ["| freezing ratio | seed | stages frozen | backbone parameters frozen | test AUC [95 % CI] | accuracy "
              "| macro-F1 | n test | validation AUC | n val | best epoch | fit s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["ratio"], r["seed"])):
        share = (f"{r['frozen_parameters']:,} ({100 * r['frozen_parameters'] / r['backbone_parameters']:.1f} %)"
                 if r.get("backbone_parameters") else "–")
        lines.append(f"| {r['ratio']:.2f} | {r['seed']} | {r['frozen_stages']} of {r['stages']} | {share} "
                     f"| {_num(r['auc'])} [{_num(r['auc_low'])}, {_num(r['auc_high'])}] | {_num(r['accuracy'])} "
                     f"| {_num(r['macro_f1'])} | {r['n_test']} | {_num(r['validation_auc'])} | {r['n_validation']} "
                     f"| {r['best_epoch']} | {r['fit_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def plot_sweep(rows: list[dict], summary: list[dict], path: Path, title: str) -> None:
    """Test AUC against the freezing ratio: with one seed, the run's AUC with its bootstrap CI; with several, every
    seed's AUC as a dot and the mean ± sd over seeds. Validation AUC (mean over seeds) as a dashed second series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    if summary:
        ratios = [s["ratio"] for s in summary]
        ax.scatter([r["ratio"] for r in rows], [_nan(r["auc"]) for r in rows], s=14, color="tab:blue", alpha=0.35,
                   label="test, each seed")
        ax.errorbar(ratios, [_nan(s["test_auc"]["mean"]) for s in summary],
                    yerr=[_nan(s["test_auc"]["sd"]) if s["test_auc"]["sd"] is not None else 0 for s in summary],
                    marker="o", capsize=4, color="tab:blue", label="test, mean ± sd over seeds")
        validation = [_nan(s["validation_auc"]["mean"]) for s in summary]
        validation_label = "validation, mean over seeds"
    else:
        ratios = [r["ratio"] for r in rows]
        auc = [_nan(r["auc"]) for r in rows]
        low = [a - r["auc_low"] if r["auc_low"] is not None else 0 for a, r in zip(auc, rows)]
        high = [r["auc_high"] - a if r["auc_high"] is not None else 0 for a, r in zip(auc, rows)]
        ax.errorbar(ratios, auc, yerr=[low, high], marker="o", capsize=4, label="test (95 % CI)")
        validation = [_nan(r["validation_auc"]) for r in rows]
        validation_label = "validation"
    ax.plot(ratios, validation, marker="s", linestyle="--", color="tab:orange", label=validation_label)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="freezing ratio (fraction of backbone stages frozen)", ylabel="AUC", ylim=(0, 1.02), title=title,
           xticks=ratios)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
