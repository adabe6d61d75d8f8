#!/usr/bin/env bash
# Copy what of a finished run may be committed into a reports folder: its numbers, recipe, split manifest and
# figures, never dataset images (gradcam_test.png shows them) or weights and predictions (large, and derived).
#   training/queues/publish_run.sh runs/<run> training/reports/<folder>
set -euo pipefail
run="${1:?run folder}"; out="${2:?reports folder}"
[ -f "$run/metrics.json" ] || { echo "$run has no metrics.json: evaluate it first" >&2; exit 2; }
mkdir -p "$out"
for file in config.toml fit.json epochs.csv metrics.json report.md split_manifest.csv external_busi.json \
            external_bus-bra.json learning_curves.png confusion_matrix.png roc.png reliability.png \
            reliability_by_source.png; do
  [ -f "$run/$file" ] && cp "$run/$file" "$out/"
done
echo "published $run -> $out"
