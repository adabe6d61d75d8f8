#!/usr/bin/env bash
# Copy what of a finished run may be committed into a reports folder: its numbers, recipe, split manifest,
# figures and validation / test predictions (file names, labels, logits: about 200 kB, so that pooled or new
# measures can be computed once this machine is gone), never dataset images (gradcam_test.png shows them) or
# weights (large).
#   training/queues/publish_run.sh runs/<run> training/reports/<folder>
set -euo pipefail
run="${1:?run folder}"; out="${2:?reports folder}"
[ -f "$run/metrics.json" ] || { echo "$run has no metrics.json: evaluate it first" >&2; exit 2; }
mkdir -p "$out"
for file in epochs.csv report.md split_manifest.csv external_busi.json external_bus-bra.json learning_curves.png \
            confusion_matrix.png roc.png reliability.png reliability_by_source.png predictions_val.npz \
            predictions_test.npz; do
  [ -f "$run/$file" ] && cp "$run/$file" "$out/"
done
# config.toml and metrics.json as a bundle ships them: without this machine's folders (fit.json is in metrics.json)
python="${PYTHON:-$(dirname "$0")/../../.venv/bin/python}"; [ -x "$python" ] || python=python3  # $PYTHON: a test's
"$python" - "$run" "$out" <<'PY'
import shutil, sys
from pathlib import Path
from training.export import write_without_local_paths
run, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("config.toml", "metrics.json"):
    (out / ".public").mkdir(exist_ok=True)
    shutil.copy(write_without_local_paths(run / name, out / ".public"), out / name)
shutil.rmtree(out / ".public")
PY
echo "published $run -> $out"
