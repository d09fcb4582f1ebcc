#!/usr/bin/env bash
# Quickstart, step 1: install (CPU build of torch, then the package) and run the main
# job: train a small CRF-GAN on demo-brain, sample full-resolution volumes, write
# NIfTI files and a PNG montage. Extra arguments go to `crfgan demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e .
exec python -m napari_crfgan.cli demo "$@"
