#!/usr/bin/env bash
# Build the one-folder BUSI Viewer app (ONNX Runtime, no torch), smoke-test it, archive it with SHA256SUMS.
#
#   packaging/build.sh            CPU build (onnxruntime)
#   packaging/build.sh --gpu      CUDA build (onnxruntime-gpu; needs an NVIDIA driver at run time)
#
# Needs: the source install's venv (.venv, with torch) to make each bundle's ONNX export, python3.11+ with
# venv, and network access to PyPI for the build venv. Outputs under build/ and dist/ (both ignored by git).
# Environment: EXPORT_PYTHON (default .venv/bin/python), PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VARIANT=cpu
[[ "${1:-}" == "--gpu" ]] && VARIANT=gpu
EXPORT_PYTHON="${EXPORT_PYTHON:-$ROOT/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
VERSION="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
STAGE="$ROOT/build/stage"
VENV="$ROOT/build/venv-$VARIANT"
APP="$ROOT/dist/busi-viewer"
started=$SECONDS

echo "== 1/5 staging resources with ONNX exports (torch, from $EXPORT_PYTHON)"
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -r resources "$STAGE/resources"
for bundle in "$STAGE"/resources/models/*/; do
    [[ -f "$bundle/model_card.json" ]] || continue
    "$EXPORT_PYTHON" -m training export-onnx "$bundle"
    # The export carries the weights (and the head's, for Grad-CAM), is bound to the card's weights hash by its
    # record and listed in the bundle's SHA256SUMS: the installer need not carry weights.safetensors too (13 MB
    # per model; a listed file that is absent is left to whoever needs it).
    rm "$bundle/weights.safetensors"
done

echo "== 2/5 build venv ($VARIANT) without torch"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$PYTHON" packaging/runtime_requirements.py > "$ROOT/build/requirements-$VARIANT.txt"
if [[ "$VARIANT" == gpu ]]; then
    sed -i 's/^onnxruntime\b/onnxruntime-gpu/' "$ROOT/build/requirements-$VARIANT.txt"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet -r "$ROOT/build/requirements-$VARIANT.txt" "pyinstaller>=6.10"
"$VENV/bin/pip" install --quiet --no-deps .
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "torch is importable in the build venv; the frozen app must not contain it" >&2
    exit 1
fi

echo "== 3/5 licences"
rm -rf "$STAGE/licenses"
"$VENV/bin/python" packaging/collect_licenses.py "$STAGE/licenses"

echo "== 4/5 PyInstaller"
rm -rf "$APP" "$ROOT/build/pyinstaller"
BUSI_BUILD_RESOURCES="$STAGE/resources" BUSI_BUILD_LICENSES="$STAGE/licenses" \
    "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --workpath "$ROOT/build/pyinstaller" --distpath "$ROOT/dist" packaging/busi-viewer.spec
if command -v strip >/dev/null && command -v readelf >/dev/null; then
    # Debug symbols only, and only where there are any (pyenv's libpython, pylibjpeg's decoders, Pillow:
    # about 37 MB). Not PyInstaller's strip option: stripping auditwheel-patched libraries (numpy's and
    # OpenCV's bundled OpenBLAS) breaks them ("ELF load command address/offset not page-aligned").
    find "$APP" -type f \( -name "*.so" -o -name "*.so.*" \) -not -path "*.libs/*" -print0 |
        while IFS= read -r -d '' library; do
            # grep reads all of readelf's output: with -q it could quit early, and pipefail would then
            # count readelf's SIGPIPE as "no debug info".
            if readelf -S "$library" 2>/dev/null | grep '\.debug_info' >/dev/null; then
                strip --strip-debug "$library"
            fi
        done
fi
build_s=$((SECONDS - started))

echo "== 5/5 smoke test of the frozen app"
"$VENV/bin/python" packaging/smoke_frozen.py "$APP"

ARCHIVE="busi-viewer-$VERSION-linux-$(uname -m)-$VARIANT.tar.gz"
tar -C "$ROOT/dist" -czf "$ROOT/dist/$ARCHIVE" busi-viewer
(cd "$ROOT/dist" && sha256sum "$ARCHIVE" > SHA256SUMS)
echo "unpacked: $(du -sh "$APP" | cut -f1)  archive: $(du -sh "$ROOT/dist/$ARCHIVE" | cut -f1)  build: ${build_s} s"
cat "$ROOT/dist/SHA256SUMS"
