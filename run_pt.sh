#!/usr/bin/env bash
# Continued pretraining. Usage: bash run_pt.sh [PRESET | config.yaml] [key=value ...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" pt "$@"
