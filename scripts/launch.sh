#!/usr/bin/env bash
# Shared launcher behind run_sft.sh / run_pt.sh:
#   launch.sh STAGE [PRESET | path/to/config.yaml] [key=value ...]
# Picks the launcher from the GPUs nvidia-smi lists: plain python for none or one, `deepspeed --num_gpus N` for
# several (with the config's own `deepspeed:` file, else deepspeed_config.json = ZeRO-2). Overrides:
#   NPROC=N            processes on this machine (NPROC=2 on a CPU box runs 2 CPU processes under deepspeed)
#   HOSTFILE=FILE      multi-node: `deepspeed --hostfile FILE` (lines like `node1 slots=8`)
#   DEEPSPEED_CONFIG=F the DeepSpeed JSON to use when several processes run (e.g. configs/deepspeed/ds_z3.json)
#   MASTER_PORT=P      rendezvous port (default 29500; pick another to run two jobs on one machine)
#   DRY_RUN=1          print the command and stop
# It prints the resolved command, then runs it from the repository root.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stage="$1"; shift
PYTHON="${PYTHON:-python3}"

fail() {  # fail MESSAGE HINT
  echo "error: $1" >&2
  echo "hint: $2" >&2
  exit 2
}

absolute() {  # the command runs from the repository root, so paths given relative to here must not change meaning
  if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi
}

default_config="$root/configs/${stage}_lora_tiny.yaml"
config="$default_config"
if [[ $# -gt 0 && "$1" != *=* ]]; then
  preset="$1"; shift
  if [[ -f "$preset" ]]; then
    config="$(absolute "$preset")"
  else
    suffix=""; [[ "$stage" == "pt" ]] && suffix="_pt"
    config="$root/configs/presets/${preset}${suffix}.yaml"
    if [[ ! -f "$config" ]]; then
      available=$(ls "$root/configs/presets/" 2>/dev/null | sed -n "s/\(.*\)${suffix}\.yaml$/\1/p" | grep -v '_pt$' | tr '\n' ' ' || true)
      available="${available% }"
      fail "unknown preset '$preset' for stage $stage (no $config)." \
           "available presets: ${available:-none yet}; or pass a path to a YAML config."
    fi
  fi
fi

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
nproc="${NPROC:-$gpus}"
if ! [[ "$nproc" =~ ^[0-9]+$ ]]; then
  fail "NPROC=$nproc is not a number of processes." "Set NPROC to a whole number, e.g. NPROC=2, or leave it unset."
fi

ds_args=()
if [[ -n "${HOSTFILE:-}" || "$nproc" -gt 1 ]]; then
  if [[ -n "${DEEPSPEED_CONFIG:-}" ]]; then
    [[ -f "$DEEPSPEED_CONFIG" ]] || fail "DEEPSPEED_CONFIG=$DEEPSPEED_CONFIG does not exist." \
      "Point it at a DeepSpeed JSON, e.g. DEEPSPEED_CONFIG=configs/deepspeed/ds_z3.json."
    ds_args=("deepspeed=$(absolute "$DEEPSPEED_CONFIG")")
  elif ! grep -qE '^deepspeed:[[:space:]]*[^[:space:]#]' "$config"; then  # the config's own ZeRO file wins
    ds_args=("deepspeed=deepspeed_config.json")
  fi
  if ! command -v deepspeed >/dev/null 2>&1; then
    fail "$nproc processes were asked for (NPROC / HOSTFILE / GPUs found), but the deepspeed launcher is not installed." \
         "pip install deepspeed==0.19.8, or run one process with NPROC=1."
  fi
fi

port_args=()
[[ -n "${MASTER_PORT:-}" ]] && port_args=(--master_port "$MASTER_PORT")
if [[ -n "${HOSTFILE:-}" ]]; then
  [[ -f "$HOSTFILE" ]] || fail "HOSTFILE=$HOSTFILE does not exist." \
    "Write one line per machine, e.g. 'node1 slots=8', and pass its path."
  cmd=(deepspeed --hostfile "$(absolute "$HOSTFILE")" "${port_args[@]}")
  [[ -n "${NPROC:-}" ]] && cmd+=(--num_gpus "$nproc")
  cmd+=(src/train_bash.py "$config" "${ds_args[@]}" "$@")
elif [[ "$nproc" -gt 1 ]]; then
  cmd=(deepspeed --num_gpus "$nproc" "${port_args[@]}" src/train_bash.py "$config" "${ds_args[@]}" "$@")
else
  cmd=("$PYTHON" src/train_bash.py "$config" "$@")
fi

echo "+ ${cmd[*]}"
[[ "${DRY_RUN:-0}" == "1" ]] && exit 0

# The built-in default and the presets train a tiny model built locally on first use (nothing is downloaded).
if grep -qE '^model_name_or_path:[[:space:]]*models/tiny-qwen2([[:space:]]|$)' "$config" \
    && [[ ! -f "$root/models/tiny-qwen2/config.json" ]]; then
  echo "Building the tiny Qwen2 model in models/tiny-qwen2 (first run only)..."
  (cd "$root" && "$PYTHON" scripts/make_tiny_model.py --arch qwen2 --out models/tiny-qwen2)
fi

cd "$root"
exec "${cmd[@]}"
