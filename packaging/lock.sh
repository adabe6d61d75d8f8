#!/usr/bin/env bash
# Refresh the frozen app's locks: packaging/requirements-{cpu,gpu}.lock, every package pinned with its hashes.
#
#   packaging/lock.sh            re-resolve from pyproject.toml's dependencies (minus torch) + build-pins.in
#   packaging/lock.sh --upgrade  also move every pin to its newest allowed release
#
# Resolved for this platform and Python (Linux x86_64, CPython 3.11); run it on the platform you build for.
# Needs PyPI (pip-tools reads the hashes from the index). build.sh installs from the lock and nothing else.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
TOOLS="$ROOT/build/venv-lock"
PIP_TOOLS_VERSION=7.7.0
UPGRADE=()
[[ "${1:-}" == "--upgrade" ]] && UPGRADE=(--upgrade)

if [[ ! -x "$TOOLS/bin/pip-compile" ]]; then
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"
fi
mkdir -p build/lock
"$PYTHON" packaging/runtime_requirements.py > build/lock/runtime-cpu.in
sed 's/^onnxruntime\b/onnxruntime-gpu/' build/lock/runtime-cpu.in > build/lock/runtime-gpu.in
for variant in cpu gpu; do
    # Relative inputs and no index options: the lock names no folder of this machine.
    CUSTOM_COMPILE_COMMAND="packaging/lock.sh" "$TOOLS/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
        --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host "${UPGRADE[@]}" \
        --output-file "packaging/requirements-$variant.lock" "build/lock/runtime-$variant.in" packaging/build-pins.in
done
echo "wrote packaging/requirements-cpu.lock and packaging/requirements-gpu.lock"
