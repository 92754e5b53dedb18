#!/usr/bin/env bash
# Supervised fine-tuning. Usage: bash run_sft.sh [PRESET | config.yaml] [key=value ...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" sft "$@"
