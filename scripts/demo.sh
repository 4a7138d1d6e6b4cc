#!/usr/bin/env bash
# Quick start, part 1: set up, then run the real check twice against the built-in PagerDuty simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/dora-incidents" demo
