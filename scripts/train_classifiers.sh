#!/bin/sh
# train_classifiers.sh — reproduces the shipped classifiers models/classifier-mnist.safetensors and
# models/classifier-fashion-mnist.safetensors (the instrument of `nuance eval classify`; numbers
# in docs/classify.md). Fetches MNIST first (scripts/get_mnist.sh); Fashion-MNIST comes from
# Debian's dataset-fashion-mnist. Same seed and thread count -> the same weights bit for bit.
# Usage: scripts/train_classifiers.sh [BUILD_DIR]      (default: build; about 6 + 8 minutes on 2 cores)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
nuance=$build/nuance
[ -x "$nuance" ] || { echo "train_classifiers.sh: $nuance not built (make build)" >&2; exit 1; }
fashion=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
[ -e "$fashion/train-images-idx3-ubyte.gz" ] || [ -e "$fashion/train-images-idx3-ubyte" ] || {
  echo "train_classifiers.sh: Fashion-MNIST not in $fashion (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
"$root/scripts/get_mnist.sh"
mkdir -p "$root/models"
"$nuance" train-classifier --data "$root/data/mnist" --classes mnist --epochs 4 --seed 1 -t 2 \
  --out "$root/models/classifier-mnist.safetensors"
"$nuance" train-classifier --data "$fashion" --classes fashion-mnist --flip --epochs 5 --seed 1 -t 2 \
  --out "$root/models/classifier-fashion-mnist.safetensors"
for d in mnist fashion-mnist; do
  case $d in mnist) src=$root/data/mnist ;; *) src=$fashion ;; esac
  echo "== $d: test accuracy, and the Fréchet floor (real train vs real test)"
  "$nuance" eval classify --classifier "$root/models/classifier-$d.safetensors" --split t10k "$src"
  "$nuance" eval classify --classifier "$root/models/classifier-$d.safetensors" --split train --fd "$src" \
    "$(ls "$src"/t10k-images-idx3-ubyte* | head -1)"
done
