#!/usr/bin/env bash
# Usage: ci/run-series.sh SERIES [TARGET] [PROFILE]
#   SERIES: mbox:FILE | dir:FOLDER | git:TREE#A..B | msgid:<id> | series:NAME/REV
# Applies the series on the target's source, builds, boots and runs the VM suite.
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:?usage: ci/run-series.sh SERIES [TARGET] [PROFILE]}
make setup
exec .venv/bin/fuse-harness run --target "${2:-v7.3}" --profile "${3:-default}" --series "$series" \
  -- --junitxml=results/junit.xml
