#!/usr/bin/env bash
# Shared launcher behind run_sft.sh / run_pt.sh:
#   launch.sh STAGE [PRESET | path/to/config.yaml] [key=value ...]
# Picks plain python for CPU or one GPU and the deepspeed launcher for several GPUs (or NPROC>1 / HOSTFILE),
# prints the resolved command, then runs it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stage="$1"; shift
PYTHON="${PYTHON:-python3}"

default_config="$root/configs/${stage}_lora_tiny.yaml"
config="$default_config"
if [[ $# -gt 0 && "$1" != *=* ]]; then
  preset="$1"; shift
  if [[ -f "$preset" ]]; then
    config="$preset"
  else
    suffix=""; [[ "$stage" == "pt" ]] && suffix="_pt"
    config="$root/configs/presets/${preset}${suffix}.yaml"
    if [[ ! -f "$config" ]]; then
      echo "error: unknown preset '$preset' for stage $stage (no $config)." >&2
      available=$(ls "$root/configs/presets/" 2>/dev/null | sed -n "s/\(.*\)${suffix}\.yaml$/\1/p" | grep -v '_pt$' | tr '\n' ' ' || true)
      echo "hint: available presets: ${available:-none yet}; or pass a path to a YAML config." >&2
      exit 2
    fi
  fi
fi

# The built-in default trains a tiny model built locally on first use (nothing is downloaded).
if [[ "$config" == "$default_config" && ! -f "$root/models/tiny-qwen2/config.json" ]]; then
  echo "Building the tiny Qwen2 model in models/tiny-qwen2 (first run only)..."
  (cd "$root" && "$PYTHON" scripts/make_tiny_model.py --arch qwen2 --out models/tiny-qwen2)
fi

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
nproc="${NPROC:-$gpus}"

if [[ -n "${HOSTFILE:-}" ]]; then
  cmd=(deepspeed --hostfile "$HOSTFILE" src/train_bash.py "$config" "deepspeed=${DEEPSPEED_CONFIG:-deepspeed_config.json}" "$@")
elif [[ "$nproc" -gt 1 ]]; then
  cmd=(deepspeed --num_gpus "$nproc" src/train_bash.py "$config" "deepspeed=${DEEPSPEED_CONFIG:-deepspeed_config.json}" "$@")
else
  cmd=("$PYTHON" src/train_bash.py "$config" "$@")
fi

echo "+ ${cmd[*]}"
cd "$root"
exec "${cmd[@]}"
