"""``busi-train sweep-freezing``: one model per freezing ratio, then a table and a plot of AUC against the ratio.

Every ratio trains the same recipe with the same split and seed (only ``model.freeze_ratio`` differs), is
evaluated as any run, and contributes its test AUC of the positive class with the bootstrap CI its evaluation
computed (resampling patients or near-duplicate groups as the recipe says), plus what the ratio froze.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.atomic import atomic_write
from training.config import TrainConfig, load_config, to_toml

DEFAULT_RATIOS = (0.0, 0.25, 0.5, 0.75)


def run_folder(out_root: Path, config: TrainConfig, ratio: float, seed: int) -> Path:
    return out_root / f"{config.name}-freeze{int(round(ratio * 100)):02d}-seed{seed}"


def sweep_freezing(config: TrainConfig, ratios: tuple[float, ...], runs_dir: Path, out: Path, *,
                   seed: int | None = None, progress: bool = False) -> list[dict]:
    """Fit and evaluate ``config`` at every ratio (resuming finished or interrupted runs), then write
    ``out/freezing_sweep.json``, ``out/freezing_sweep.md`` and ``out/freezing_sweep.png``. Returns the rows."""
    from training.evaluate import run_evaluate
    from training.pipeline import run_fit

    seed = config.train.seeds[0] if seed is None else seed
    rows = []
    for ratio in ratios:
        variant = dataclasses.replace(config, description=f"{config.description}; freezing ratio {ratio:g}",
                                      model=dataclasses.replace(config.model, freeze_ratio=ratio))
        folder = run_folder(runs_dir, config, ratio, seed)
        if not (folder / "metrics.json").is_file():
            run_fit(variant, folder, seed=seed, progress=progress)
            run_evaluate(folder, progress=progress)
        rows.append(_row(folder, ratio))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "freezing_sweep.json", encoding="utf-8") as handle:
        json.dump({"config": to_toml(config), "seed": seed, "rows": rows}, handle, indent=2)
    with atomic_write(out / "freezing_sweep.md", encoding="utf-8") as handle:
        handle.write(sweep_table(config, rows, seed))
    plot_sweep(rows, out / "freezing_sweep.png", f"{config.name}: test AUC vs freezing ratio (seed {seed})")
    return rows


def _row(folder: Path, ratio: float) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    test, fit = metrics["test"], metrics["run"]
    positive = load_config(folder / "config.toml").positive_class
    key = f"auc_{positive}"
    interval = test["bootstrap"]["intervals"].get(key, {})
    freezing = fit.get("freezing", {})
    return {
        "ratio": ratio, "run": folder.name, "positive_class": positive,
        "auc": test["per_class"][positive]["auc"], "auc_low": interval.get("low"), "auc_high": interval.get("high"),
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n_test": test["n"],
        "validation_auc": metrics["validation"]["per_class"][positive]["auc"], "n_validation": metrics["validation"]["n"],
        "frozen_stages": freezing.get("frozen_stages"), "stages": freezing.get("stages"),
        "frozen_parameters": freezing.get("frozen_parameters"), "backbone_parameters": freezing.get("backbone_parameters"),
        "best_epoch": fit["best_epoch"], "fit_seconds": fit["fit_seconds"],
    }


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def sweep_table(config: TrainConfig, rows: list[dict], seed: int) -> str:
    """The sweep as Markdown: one row per ratio, with what it froze and the test and validation numbers."""
    positive = rows[0]["positive_class"] if rows else "?"
    lines = [f"# Freezing-ratio sweep: {config.name}", "", f"**{RESEARCH_USE_BANNER}.**", "",
             f"{config.description}. Task {config.data.task} on {config.data.dataset}; seed {seed}; the same split "
             f"for every ratio. AUC is of p({positive}) on the held-out test split with a percentile bootstrap "
             "95 % CI (resampling groups as the recipe says); validation AUC for comparison.", "",
             "| freezing ratio | stages frozen | backbone parameters frozen | test AUC [95 % CI] | accuracy | macro-F1 "
             "| n test | validation AUC | n val | best epoch | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = (f"{r['frozen_parameters']:,} ({100 * r['frozen_parameters'] / r['backbone_parameters']:.1f} %)"
                 if r.get("backbone_parameters") else "–")
        lines.append(f"| {r['ratio']:.2f} | {r['frozen_stages']} of {r['stages']} | {share} | {_num(r['auc'])} "
                     f"[{_num(r['auc_low'])}, {_num(r['auc_high'])}] | {_num(r['accuracy'])} | {_num(r['macro_f1'])} "
                     f"| {r['n_test']} | {_num(r['validation_auc'])} | {r['n_validation']} | {r['best_epoch']} "
                     f"| {r['fit_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[dict], path: Path, title: str) -> None:
    """AUC (with its CI as error bars) against the freezing ratio; validation AUC as a second series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [r["ratio"] for r in rows]
    auc = [r["auc"] if r["auc"] is not None else float("nan") for r in rows]
    low = [a - r["auc_low"] if r["auc_low"] is not None else 0 for a, r in zip(auc, rows)]
    high = [r["auc_high"] - a if r["auc_high"] is not None else 0 for a, r in zip(auc, rows)]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(ratios, auc, yerr=[low, high], marker="o", capsize=4, label="test (95 % CI)")
    ax.plot(ratios, [r["validation_auc"] if r["validation_auc"] is not None else float("nan") for r in rows],
            marker="s", linestyle="--", label="validation")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="freezing ratio (fraction of backbone stages frozen)", ylabel="AUC", ylim=(0, 1.02), title=title,
           xticks=ratios)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
