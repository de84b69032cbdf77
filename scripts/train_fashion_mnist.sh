#!/bin/sh
# train_fashion_mnist.sh — reproduces the built-in model models/fashion-mnist.safetensors with one
# command: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), the class-conditional
# UNet of scripts/train_mnist.sh trained with `nuance train`, the f16 EMA export with the class names
# t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle-boot, and the
# evaluation with models/classifier-fashion-mnist.safetensors. Same options (BUILD_DIR argument;
# ARCH, STEPS, THREADS, RUN, OUT, EVAL environment variables) as scripts/train_mnist.sh.
set -eu
DATASET=fashion-mnist
export DATASET
exec "$(dirname "$0")/train_mnist.sh" "$@"
