#!/usr/bin/env bash
# Install bench and what it needs. torch/torchvision are pinned first: an unpinned torch
# would pull a multi-GB build from the registry instead of the wheels on this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[test]"
