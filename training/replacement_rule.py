"""``busi-train replacement-rule``: the pre-registered rule that decides whether a candidate recipe replaces the
shipped one, applied to a ``cv-compare`` result.

The rule was written down before the candidate's folds finished (README, "How the backbone will be chosen"), so
that the decision cannot drift towards whichever numbers come out. The candidate replaces the reference only if,
over all paired folds:

1. its mean malignant-AUC difference is above 0 on every source, with the 95 % interval above 0 on at least one;
2. its mean arg-max accuracy and specificity at the threshold are lower by at most ``tolerance`` on every source;
3. the viewer's never-seen p95 (forward + explanation, ``bench/viewer_bench.py``) with a candidate bundle stays
   within the budget.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.cv import CvSummaryError, write_result

AUC = "malignant AUC"
NOT_WORSE = ("arg-max accuracy", "specificity at the threshold")
PAIRED_FOLDS = 5
ACCURACY_TOLERANCE = 0.01  # the largest drop in accuracy or specificity the rule accepts
VIEWER_BUDGET_MS = 100.0


def _entry(block: dict, source: str, measure: str) -> dict:
    entry = block.get(measure)
    if entry is None:
        raise CvSummaryError(f"the comparison has no {measure} on {source}")
    return entry


def apply_rule(compare: dict, viewer_p95_ms: float, *, folds: int = PAIRED_FOLDS,
               tolerance: float = ACCURACY_TOLERANCE, budget_ms: float = VIEWER_BUDGET_MS) -> dict:
    """The rule's three criteria on ``compare`` (``cv_compare.json``'s content) and a measured viewer p95 (ms).

    Returns ``{"criteria": [{"criterion", "met", "evidence"}, ...], "replace": bool}``; :class:`CvSummaryError`
    when the comparison holds other than ``folds`` paired folds or lacks a measure the rule reads."""
    if len(compare["folds"]) != folds:
        raise CvSummaryError(f"the rule reads {folds} paired folds; the comparison holds {len(compare['folds'])}")
    sources = compare["by_source"]
    aucs = {source: _entry(block, source, AUC) for source, block in sources.items()}
    auc_evidence = "; ".join(f"{s} {e['mean_difference']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"
                             for s, e in aucs.items())
    drops = {(source, measure): _entry(block, source, measure)["mean_difference"]
             for source, block in sources.items() for measure in NOT_WORSE}
    criteria = [
        {"criterion": "mean malignant-AUC difference above 0 on every source, its 95 % interval above 0 on one",
         "met": all(e["mean_difference"] > 0 for e in aucs.values()) and any(e["low"] > 0 for e in aucs.values()),
         "evidence": auc_evidence},
        {"criterion": f"arg-max accuracy and specificity at the threshold lower by at most {tolerance} on every "
                      "source",
         "met": all(d >= -tolerance for d in drops.values()),
         "evidence": "; ".join(f"{s} {m} {d:+.3f}" for (s, m), d in drops.items())},
        {"criterion": f"viewer never-seen p95 within {budget_ms:g} ms",
         "met": viewer_p95_ms <= budget_ms, "evidence": f"{viewer_p95_ms:g} ms"},
    ]
    return {"candidate": compare["candidate"], "reference": compare["reference"], "folds": compare["folds"],
            "criteria": criteria, "replace": all(c["met"] for c in criteria)}


def rule_markdown(verdict: dict) -> str:
    """The verdict as Markdown: one row per criterion, then the decision."""
    lines = [f"Candidate: {verdict['candidate']}; reference: {verdict['reference']}; paired folds "
             f"{', '.join(map(str, verdict['folds']))}.", "", "| criterion | met | evidence |", "|---|---|---|"]
    lines += [f"| {c['criterion']} | {'yes' if c['met'] else 'no'} | {c['evidence']} |" for c in verdict["criteria"]]
    decision = "the candidate replaces the reference" if verdict["replace"] else "the reference stays"
    return "\n".join(lines) + f"\n\nDecision: {decision}.\n"


def write_rule(compare_dir: Path, viewer_p95_ms: float) -> dict:
    """Read ``compare_dir/cv_compare.json``; write ``replacement_rule.json`` and ``.md`` beside it."""
    path = Path(compare_dir) / "cv_compare.json"
    if not path.is_file():
        raise CvSummaryError(f"{path} does not exist: run busi-train cv-compare first")
    verdict = apply_rule(json.loads(path.read_text(encoding="utf-8")), viewer_p95_ms)
    return write_result(Path(compare_dir), "replacement_rule", verdict, rule_markdown(verdict))
