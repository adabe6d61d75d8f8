#!/usr/bin/env bash
# The runs behind busi-us 0.3 (issue #15), one after another: on a 2-core machine two runs at once only slow
# each other down. A session's machine does not outlive it (runs/ and checkpoints are gone in the next one), so
# each finished run is published into training/reports/model-0.3/<run> at once, and a run already published
# there is skipped: a session starts this queue, commits what it published before it stops, and the next session
# starts it again to continue with the first unpublished run.
#
#   BUSI_DATA=/path/to/busi BUSBRA_DATA=/path/to/BUSBRA nohup training/queues/model_0_3.sh > runs/queue.log 2>&1 &
#
# The splits read the audits' groups (BUSI's near-duplicate groups, BUS-BRA patients joined by its
# near-duplicates): they are run first when runs/ lacks them.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BUSI_DATA:?set BUSI_DATA to the BUSI folder}"
: "${BUSBRA_DATA:?set BUSBRA_DATA to the BUS-BRA folder}"
train=".venv/bin/busi-train"
[ -x "$train" ] || train="busi-train"
reports="training/reports/model-0.3"

published() { [ -f "$reports/$1/metrics.json" ]; }
publish() { training/queues/publish_run.sh "runs/$1" "$reports/$1"; }

trained() {  # trained CONFIG RUN_NAME [busi-train fit options...]: runs/RUN fitted and evaluated, unless it already is;
  # --data is BUSI's folder unless $fit_data names another (a single-source BUS-BRA run reads its images from --data)
  local config="$1" run="$2"; shift 2
  [ -f "runs/$run/metrics.json" ] || "$train" fit --config "$config" --data "${fit_data:-$BUSI_DATA}" \
    --busbra "$BUSBRA_DATA" --out "runs/$run" --evaluate --no-progress "$@"
}
fit_config() {  # fit_config CONFIG RUN_NAME [busi-train fit options...]: skipped once the run is published
  published "$2" && { echo "published already: $2"; return; }
  trained "$@"
  publish "$2"
}
fit() { fit_config busi_busbra "$@"; }  # fit RUN_NAME [options...]: the busi_busbra recipe

scored_elsewhere() {  # scored_elsewhere RUN_NAME OTHER_SOURCE OTHER_FOLDER: leave-one-source-out scoring, published
  [ -f "runs/$1/external_$2.json" ] || "$train" score-external "runs/$1" --source "$2" --data "$3" --no-progress
  publish "$1"
}
loso() {  # loso CONFIG RUN_NAME OTHER_SOURCE OTHER_FOLDER [fit options...]: train on one source, score the other
  local config="$1" run="$2" other="$3" folder="$4"; shift 4
  [ -f "$reports/$run/external_$other.json" ] && { echo "published already: $run on $other"; return; }
  trained "$config" "$run" "$@"  # the scoring needs the weights, which only this session's runs/ has
  scored_elsewhere "$run" "$other" "$folder"
}
one_pass() {  # one_pass CONFIG RUN_NAME [fit options...]: the run (fitted if this session lacks it), evaluated
  # again in one pass, as busi-us 0.3.2 runs (no mirror mean; temperature and threshold fitted afresh), as RUN-one-pass
  published "$2-one-pass" && { echo "published already: $2-one-pass"; return; }
  make_one_pass "$@"
}
make_one_pass() {  # make_one_pass CONFIG RUN_NAME [fit options...]: one_pass, published or not
  local run="$2"
  trained "$@"
  published "$run" || publish "$run"
  [ -f "runs/$run-one-pass/metrics.json" ] || { rm -rf "runs/$run-one-pass"
    "$train" evaluate "runs/$run" --set eval.tta_hflip=false --out "runs/$run-one-pass" --no-progress; }
  publish "$run-one-pass"
}
loso_one_pass() {  # loso_one_pass RUN_NAME OTHER_SOURCE OTHER_FOLDER [fit options...]: loso, for the s16 recipe
  # as shipped (one pass)
  local run="$1" other="$2" folder="$3"; shift 3
  [ -f "$reports/$run-one-pass/external_$other.json" ] && { echo "published already: $run-one-pass on $other"; return; }
  make_one_pass busi_busbra_evidence_s16 "$run" "$@"
  scored_elsewhere "$run-one-pass" "$other" "$folder"
}
cv_summary() {  # cv_summary RUN_PREFIX RUN_SUFFIX OUT: once the five folds RUN_PREFIX{0..4}RUN_SUFFIX are published
  local prefix="$1" suffix="$2" out="$3" fold
  for fold in 0 1 2 3 4; do published "$prefix$fold$suffix" || return 0; done
  [ -f "$reports/$out/cv_summary.json" ] || "$train" cv-summary "$reports/$prefix"?"$suffix" --out "$reports/$out"
}

# 0. the audits the splits read
[ -f runs/audit/groups.csv ] || "$train" audit --data "$BUSI_DATA"
[ -f runs/audit-bus-bra/groups.csv ] || "$train" audit --dataset bus-bra --busbra "$BUSBRA_DATA"

# 1. the shipped model: both sources, the single grouped split, seed 0
fit busi-busbra-seed0
# 1b. the same split with evidence alignment (issue #19)
fit_config busi_busbra_evidence busi-busbra-evidence0.3-seed0
fit_config busi_busbra_evidence busi-busbra-evidence0.3-seed0-fold0 --fold 0
# 1c. the same on a finer explanation grid (output stride 16), on the shipped split: it ships as busi-us 0.3.2
#     (2026-12-04) in one pass, so its grouped 5-fold cross-validation comes before everything below, each fold
#     evaluated as trained (mirror mean) and as shipped (one pass)
fit_config busi_busbra_evidence_s16 busi-busbra-evidence-s16-seed0
for fold in 0 1 2 3 4; do
  one_pass busi_busbra_evidence_s16 "busi-busbra-evidence-s16-seed0-fold$fold" --fold "$fold"
done
cv_summary busi-busbra-evidence-s16-seed0-fold "" cv-evidence-s16
cv_summary busi-busbra-evidence-s16-seed0-fold -one-pass cv-evidence-s16-one-pass
# 1d. leave-one-source-out of that recipe, as shipped (one pass): trained on one source (evidence alignment on its
#     own masks), scored on the other with its own temperature and threshold
fit_data="$BUSBRA_DATA" loso_one_pass loso-s16-busbra-only-seed0 busi "$BUSI_DATA" --set data.dataset=bus-bra \
  --set data.task=benign-vs-malignant
loso_one_pass loso-s16-busi-only-seed0 bus-bra "$BUSBRA_DATA" --set data.dataset=busi
# 2. the backbone question, on the shipped recipe and the same folds: EfficientNet-Lite2 at its native 260 px
#    (bench/backbone_latency.py, 2026-12-04: 1.56x the shipped model's predict + Grad-CAM through ONNX Runtime)
for fold in 0 1 2 3 4; do
  one_pass busi_busbra_evidence_s16 "busi-busbra-evidence-s16-lite2-seed0-fold$fold" --fold "$fold" \
    --set model.arch=tf_efficientnet_lite2 --set data.input_size=260
done
cv_summary busi-busbra-evidence-s16-lite2-seed0-fold -one-pass cv-evidence-s16-lite2-one-pass
cv_compare() {  # cv_compare CANDIDATE_PREFIX REFERENCE_PREFIX SUFFIX OUT: paired, once both sides' five folds are published
  local candidate="$1" reference="$2" suffix="$3" out="$4" fold
  for fold in 0 1 2 3 4; do published "$candidate$fold$suffix" && published "$reference$fold$suffix" || return 0; done
  [ -f "$reports/$out/cv_compare.json" ] || "$train" cv-compare "$reports/$candidate"?"$suffix" \
    --against "$reports/$reference"?"$suffix" --out "$reports/$out"
}
#    the backbone is chosen on the folds paired image by image (README, "How the backbone will be chosen")
cv_compare busi-busbra-evidence-s16-lite2-seed0-fold busi-busbra-evidence-s16-seed0-fold -one-pass \
  compare-lite2-vs-lite0-one-pass
#    and the pre-registered rule decides (training/replacement_rule.py). The viewer's p95 is the worse of two
#    measurements with the Lite2 fold-0 bundle (bench/README.md, "Backbone candidates": 83 and 72 ms)
lite2_vs_lite0="$reports/compare-lite2-vs-lite0-one-pass"
if [ -f "$lite2_vs_lite0/cv_compare.json" ] && [ ! -f "$lite2_vs_lite0/replacement_rule.json" ]; then
  "$train" replacement-rule "$lite2_vs_lite0" --viewer-p95-ms 83
fi
# 2b. only if Lite2 replaces Lite0: its run on the shipped split (the next bundle) and its leave-one-source-out pair
#     (the scope guard's margin is chosen on the bundle's own recipe's pair)
if [ -f "$lite2_vs_lite0/replacement_rule.json" ] && grep -q '"replace": true' "$lite2_vs_lite0/replacement_rule.json"
then
  lite2=(--set model.arch=tf_efficientnet_lite2 --set data.input_size=260)
  one_pass busi_busbra_evidence_s16 busi-busbra-evidence-s16-lite2-seed0 "${lite2[@]}"
  fit_data="$BUSBRA_DATA" loso_one_pass loso-s16-lite2-busbra-only-seed0 busi "$BUSI_DATA" --set data.dataset=bus-bra \
    --set data.task=benign-vs-malignant "${lite2[@]}"
  loso_one_pass loso-s16-lite2-busi-only-seed0 bus-bra "$BUSBRA_DATA" --set data.dataset=busi "${lite2[@]}"
fi
# 3. history: the 0.3.1 recipe's grouped 5-fold CV (folds 0-3 published), each source split into its own folds
for fold in 0 1 2 3 4; do
  fit "busi-busbra-seed0-fold$fold" --fold "$fold"
done
cv_summary busi-busbra-seed0-fold "" cv
#    and leave-one-source-out of the 0.3.1 recipe (published ones predate the BUS-BRA patient join; kept as history
#    under their names, so these re-runs have their own)
fit_data="$BUSBRA_DATA" loso busi_busbra loso-joined-busbra-only-seed0 busi "$BUSI_DATA" --set data.dataset=bus-bra \
  --set data.task=benign-vs-malignant
loso busi_busbra loso-joined-busi-only-seed0 bus-bra "$BUSBRA_DATA" --set data.dataset=busi
echo "queue finished"
