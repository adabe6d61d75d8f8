#!/usr/bin/env bash
# The runs behind busi-us 0.3 (issue #15), one after another: on a 2-core machine two runs at once only slow
# each other down. Every run resumes from its last epoch when started again, and a finished step is skipped, so a
# session can start this queue, be stopped anywhere, and a later session starts it again to continue:
#
#   BUSI_DATA=/path/to/busi BUSBRA_DATA=/path/to/BUSBRA nohup training/queues/model_0_3.sh > runs/queue.log 2>&1 &
#
# After each step, copy what may be published (no dataset images) into training/reports/ and commit it:
#   training/queues/publish_run.sh runs/<run> training/reports/model-0.3/<run>
#
# The BUS-BRA splits join patients by the BUS-BRA audit's near-duplicates: run `busi-train audit --dataset
# bus-bra --busbra "$BUSBRA_DATA"` once before (and `busi-train audit` for BUSI's groups).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BUSI_DATA:?set BUSI_DATA to the BUSI folder}"
: "${BUSBRA_DATA:?set BUSBRA_DATA to the BUS-BRA folder}"
train=".venv/bin/busi-train"
[ -x "$train" ] || train="busi-train"

fit_config() {  # fit_config CONFIG RUN_NAME [busi-train fit options...]: skipped once the run has its metrics
  local config="$1" run="runs/$2"; shift 2
  [ -f "$run/metrics.json" ] && { echo "done already: $run"; return; }
  "$train" fit --config "$config" --data "$BUSI_DATA" --busbra "$BUSBRA_DATA" --out "$run" --evaluate \
    --no-progress "$@"
}
fit() { fit_config busi_busbra "$@"; }  # fit RUN_NAME [options...]: the busi_busbra recipe
fit_evidence() { fit_config busi_busbra_evidence "$@"; }  # the same with evidence alignment (issue #19)
external() {  # external RUN_NAME SOURCE FOLDER: leave-one-source-out scoring, skipped once done
  [ -f "runs/$1/external_$2.json" ] || "$train" score-external "runs/$1" --source "$2" --data "$3" --no-progress
}

# 1. the shipped model: both sources, the single grouped split, seed 0
fit busi-busbra-seed0
# 1b. the same split with evidence alignment (issue #19), then its grouped 5-fold cross-validation: the candidate
#     for the next shipped model, so its folds come before everything below
fit_evidence busi-busbra-evidence0.3-seed0
fit_evidence busi-busbra-evidence0.3-seed0-fold0 --fold 0
# 1c. the same on a finer explanation grid (output stride 16), on the shipped split. It won on that split
#     (2026-12-04: pointing game BUSI 0.90 vs 0.73, BUS-BRA 0.99 vs 0.89, AUCs within their CIs), so its grouped
#     5-fold cross-validation replaces the stride-32 evidence recipe's folds 1-4 (fold 0 of that stays published)
fit_config busi_busbra_evidence_s16 busi-busbra-evidence-s16-seed0
for fold in 0 1 2 3 4; do
  fit_config busi_busbra_evidence_s16 "busi-busbra-evidence-s16-seed0-fold$fold" --fold "$fold"
done
"$train" cv-summary runs/busi-busbra-evidence-s16-seed0-fold? --out training/reports/model-0.3/cv-evidence-s16
# 1d. leave-one-source-out of that recipe, which ships as busi-us 0.3.2 (2026-12-04): trained on one source
#     (evidence alignment on its own masks), scored on the other with its own temperature and threshold
fit_config busi_busbra_evidence_s16 loso-s16-busbra-only-seed0 --set data.dataset=bus-bra \
  --set data.task=benign-vs-malignant
fit_config busi_busbra_evidence_s16 loso-s16-busi-only-seed0 --set data.dataset=busi
external loso-s16-busi-only-seed0 bus-bra "$BUSBRA_DATA"
external loso-s16-busbra-only-seed0 busi "$BUSI_DATA"
# 2. grouped 5-fold cross-validation of the recipe, each source split into folds on its own
for fold in 0 1 2 3 4; do
  fit "busi-busbra-seed0-fold$fold" --fold "$fold"
done
"$train" cv-summary runs/busi-busbra-seed0-fold? --out training/reports/model-0.3/cv
# 3. leave-one-source-out of the 0.3.1 recipe (measured before BUS-BRA patients were joined; this re-runs it
#    with the join)
fit loso-busbra-only-seed0 --set data.dataset=bus-bra --set data.task=benign-vs-malignant
fit loso-busi-only-seed0 --set data.dataset=busi
external loso-busi-only-seed0 bus-bra "$BUSBRA_DATA"
external loso-busbra-only-seed0 busi "$BUSI_DATA"
# 4. the backbone question: the same recipe on EfficientNet-Lite2 at its native 260 px, same folds
for fold in 0 1 2 3 4; do
  fit "busi-busbra-lite2-seed0-fold$fold" --fold "$fold" --set model.arch=tf_efficientnet_lite2 \
    --set data.input_size=260
done
"$train" cv-summary runs/busi-busbra-lite2-seed0-fold? --out training/reports/model-0.3/cv-lite2
echo "queue finished"
