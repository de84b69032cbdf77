#!/bin/sh
# train_mnist.sh — reproduces the built-in model models/mnist.safetensors with one command (issue 4
# item 7): fetches MNIST (scripts/get_mnist.sh), trains the class-conditional UNet with `nuance
# train` (a killed or interrupted run continues where its last checkpoint left off when the script
# is run again), exports the EMA weights as f16 with the class names (<= 5 MB), and, when the
# classifier models/classifier-mnist.safetensors is there, measures 100 samples per class with
# `nuance eval classify` (class agreement, Fréchet distance to the real test set).
# scripts/train_fashion_mnist.sh runs this script with DATASET=fashion-mnist.
#
# Usage: scripts/train_mnist.sh [BUILD_DIR]          (default: build; make build first)
# Environment:
#   ARCH=dit        train the DiT variant instead (written to models/<dataset>-dit.safetensors)
#   STEPS=N         optimizer steps (defaults below: measured to fit ~25-35 minutes on 2 cores)
#   THREADS=N       threads (default: nproc). The loss trajectory depends on it: same seed and
#                   thread count reproduce the shipped weights bit for bit.
#   RUN=DIR         run folder (default: data/runs/<dataset>-<arch>)
#   OUT=FILE        exported model (default: models/<dataset>.safetensors, -dit for the DiT)
#   OBJECTIVE=X     eps, v or flow instead of the architecture's default (unet: eps, dit: flow)
#   EVAL=0          skip the evaluation
# Configurations (docs/training.md explains the choice):
#   unet: widths 16,32,32, self-attention at the 7x7 level and in the mid block, 1 resnet per block
#         (281k parameters, 0.6 MB as f16), eps objective, batch 64, AdamW lr 1e-3, 200 warm-up
#         steps then cosine, clipping 1.0, EMA 0.999, label dropout 0.1
#   dit:  patch 4 (7x7 tokens), 6 blocks of 4 heads x 32 (D = 128), flow-matching objective
#         (rectified flow; eps gave speckled samples, docs/training.md), same optimiser
#         (2.1M parameters, 4.3 MB as f16; most are the per-block time/class embedders of the
#         diffusers layout)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
nuance=$build/nuance
dataset=${DATASET:-mnist}
arch=${ARCH:-unet}
threads=${THREADS:-$(nproc)}
[ -x "$nuance" ] || { echo "train_mnist.sh: $nuance is not built (make build)" >&2; exit 1; }

case $dataset in
  mnist)
    "$root/scripts/get_mnist.sh"
    data=$root/data/mnist
    names=0,1,2,3,4,5,6,7,8,9
    steps_unet=3000; steps_dit=5000 ;;
  fashion-mnist)
    data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
    [ -e "$data/train-images-idx3-ubyte.gz" ] || [ -e "$data/train-images-idx3-ubyte" ] || {
      echo "train_mnist.sh: Fashion-MNIST not in $data (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
    names=t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot
    steps_unet=4000; steps_dit=5000 ;;
  *) echo "train_mnist.sh: DATASET must be mnist or fashion-mnist" >&2; exit 1 ;;
esac

case $arch in
  unet) model="--model unet --widths 16,32,32 --attn 0,0,1 --layers 1 --mid-attn 1 --groups 8 --head-dim 8"
        objective=eps; steps=${STEPS:-$steps_unet}; out=$root/models/$dataset.safetensors ;;
  dit)  model="--model dit --patch 4 --depth 6 --heads 4 --head-dim 32 --ff-mult 4"
        objective=flow; steps=${STEPS:-$steps_dit}; out=$root/models/$dataset-dit.safetensors ;;
  *) echo "train_mnist.sh: ARCH must be unet or dit" >&2; exit 1 ;;
esac
run=${RUN:-$root/data/runs/$dataset-$arch}
out=${OUT:-$out}

if [ -f "$run/model.safetensors" ]; then
  echo "== $run already finished (remove it to train again)"
elif [ -f "$run/checkpoint.safetensors" ]; then
  echo "== continuing $run from its last checkpoint"
  # shellcheck disable=SC2086
  "$nuance" train --out "$run" --resume --data "$data" --steps "$steps" -t "$threads"
else
  echo "== training $arch on $dataset: $steps steps into $run"
  # shellcheck disable=SC2086
  "$nuance" train --data "$data" --out "$run" $model --class-names "$names" \
    --objective "${OBJECTIVE:-$objective}" --label-dropout 0.1 --steps "$steps" --batch 64 --lr 1e-3 --warmup 200 --schedule cosine \
    --clip 1 --ema 0.999 --seed 0 --ckpt-every 250 --sample-every 1000 --sample-cols 8 -t "$threads"
fi

mkdir -p "$root/models"
"$nuance" train --export "$run" -o "$out" --dtype f16
size=$(wc -c <"$out")
[ "$size" -le 5000000 ] || { echo "train_mnist.sh: $out is $size bytes, over the 5 MB limit" >&2; exit 1; }

clf=$root/models/classifier-$dataset.safetensors
if [ "${EVAL:-1}" != 0 ] && [ -f "$clf" ]; then
  gen=$run/eval
  rm -rf "$gen"
  echo "== 100 samples per class (default sampler of the model), classified by $clf"
  for c in $(echo "$names" | tr , ' '); do
    "$nuance" generate -m "$out" -p "$c" -b 100 -s 1 -o "$gen/$c/%03d.png" -t "$threads" >/dev/null
  done
  "$nuance" eval classify --classifier "$clf" "$gen"
  test_images=$(ls "$data"/t10k-images-idx3-ubyte* | head -1)
  "$nuance" eval classify --classifier "$clf" --fd "$test_images" "$gen"
fi
echo "== $out ($size bytes). Try: $build/nuance generate -m $dataset -p all -b 8 --grid $dataset-grid.png"
