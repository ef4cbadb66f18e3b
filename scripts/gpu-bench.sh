#!/usr/bin/env bash
# The GPU benchmark: cram's pretraining step (crammed-bert, seq 128) against our own PyTorch
# implementation of the same step (scripts/gpu-bench/torch_step.py), eager and torch.compile,
# in fp32 and bf16: tokens/s, MFU (6 x parameters x tokens/s / the card's dense bf16 peak) and
# peak memory.
#
#   scripts/gpu-bench.sh build [OUT]           on the build machine: cargo build --release
#                                              --features cuda (offline through
#                                              scripts/cuda-offline-llvm.sh where prepared),
#                                              then `bundle` it into OUT (target/gpu-bench)
#   scripts/gpu-bench.sh bundle BINARY OUT     strip and compress BINARY into OUT with the
#                                              PyTorch script and this one (what travels)
#   scripts/gpu-bench.sh run [BUNDLE] [RESULTS] on the GPU machine: unpack, run both, print the
#                                              comparison; JSON results land in RESULTS
#
# `run` settings (environment): DEVICE (cuda:0), ARCH (crammed-bert), MICRO_BATCH (128),
# STEPS (20), WARMUP (3), PRECISION (fp32,bf16), TORCH_MODES (eager,compile), PEAK_TFLOPS
# (default: from the card's name), CRAM_LIMIT / TORCH_LIMIT (seconds each side may take:
# 240 / 200, so that the whole run stays under 8 minutes). `bundle` compresses at ZSTD_LEVEL
# (19).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

die() { echo "gpu-bench: $*" >&2; exit 1; }

bundle() {
  local binary="$1" out="$2"
  [ -x "$binary" ] || die "no executable at $binary"
  mkdir -p "$out"
  local tmp; tmp="$(mktemp)"
  cp "$binary" "$tmp"
  strip "$tmp"
  zstd -q "-${ZSTD_LEVEL:-19}" -T0 -f "$tmp" -o "$out/cram.zst"
  rm -f "$tmp"
  cp "$here/gpu-bench/torch_step.py" "$out/torch_step.py"
  cp "$here/gpu-bench.sh" "$out/gpu-bench.sh"
  local size; size=$(du -k "$out/cram.zst" | cut -f1)
  echo "gpu-bench: bundle in $out (cram.zst ${size} KiB)"
  [ "$size" -lt 65536 ] || echo "gpu-bench: warning: the bundle is over 64 MiB" >&2
}

build() {
  local out="${1:-target/gpu-bench}"
  cd "$here/.."
  if "$here/cuda-offline-llvm.sh" --check >/dev/null 2>&1; then
    echo "gpu-bench: building --features cuda (offline LLVM stand-in in place)"
  else
    echo "gpu-bench: building --features cuda (run scripts/cuda-offline-llvm.sh first if this machine has no internet)"
  fi
  cargo build --release --locked --features cuda
  bundle target/release/cram "$out"
}

run() {
  local bundle_dir="${1:-$here}" results="${2:-./gpu-bench-results}"
  mkdir -p "$results"
  local bin="$results/cram"
  if [ -f "$bundle_dir/cram.zst" ]; then
    zstd -q -d -f "$bundle_dir/cram.zst" -o "$bin"
  elif [ -x "$bundle_dir/cram" ]; then
    cp "$bundle_dir/cram" "$bin"
  else
    die "no cram.zst or cram in $bundle_dir"
  fi
  chmod +x "$bin"
  local device="${DEVICE:-cuda:0}" arch="${ARCH:-crammed-bert}" mb="${MICRO_BATCH:-128}"
  local steps="${STEPS:-20}" warmup="${WARMUP:-3}" precision="${PRECISION:-fp32,bf16}"
  local card=""
  if command -v nvidia-smi >/dev/null 2>&1; then
    card="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  fi
  local peak=()
  [ -n "${PEAK_TFLOPS:-}" ] && peak=(--peak-tflops "$PEAK_TFLOPS")
  local card_arg=()
  [ -n "$card" ] && card_arg=(--card "$card")
  echo "== cram"
  timeout "${CRAM_LIMIT:-240}" "$bin" bench --device "$device" --arch "$arch" \
    --micro-batch "$mb" --steps "$steps" --warmup "$warmup" --precision "$precision" \
    "${peak[@]}" "${card_arg[@]}" --json "$results/cram.json" || echo "gpu-bench: cram bench failed or ran out of time (rc $?)"
  echo "== PyTorch"
  local script="$bundle_dir/torch_step.py"
  [ -f "$script" ] || script="$here/gpu-bench/torch_step.py"
  if python3 -c "import torch" 2>/dev/null; then
    local torch_peak=()
    local p="${PEAK_TFLOPS:-}"
    if [ -z "$p" ] && [ -f "$results/cram.json" ]; then
      p="$(python3 -c "import json,sys; v=json.load(open(sys.argv[1]))['peak_tflops']; print(v if v else '')" "$results/cram.json")"
    fi
    [ -n "$p" ] && torch_peak=(--peak-tflops "$p")
    local torch_device=cpu
    [[ "$device" == cuda* ]] && torch_device="$device"
    timeout "${TORCH_LIMIT:-200}" python3 "$script" --arch "$arch" --micro-batch "$mb" \
      --steps "$steps" --warmup "$warmup" --precision "$precision" \
      --modes "${TORCH_MODES:-eager,compile}" --device "$torch_device" "${torch_peak[@]}" \
      --json "$results/torch.json" || echo "gpu-bench: the PyTorch side failed or ran out of time (rc $?)"
  else
    echo "gpu-bench: no torch here: the PyTorch side is skipped"
  fi
  echo "== comparison"
  python3 - "$results" <<'PY'
import json, os, sys
d = sys.argv[1]
def load(name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None
cram, torch = load("cram.json"), load("torch.json")
rows = []
if cram:
    rows += [("cram", r) for r in cram["rows"]]
if torch:
    rows += [(r["tool"], r) for r in torch["rows"]]
base = {r["precision"]: r["tokens_per_second"] for t, r in rows if t == "pytorch-eager"}
card = (cram or {}).get("card") or (torch or {}).get("card") or "?"
print(f"card: {card}")
print(f"{'tool':<16} {'prec':<5} {'tokens/s':>12} {'MFU':>7} {'peak mem':>10} {'vs eager':>9}")
for tool, r in rows:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    mem = f"{r['peak_memory_bytes'] / 2**30:.2f}G" if r.get("peak_memory_bytes") else "n/a"
    ratio = r["tokens_per_second"] / base[r["precision"]] if r["precision"] in base else None
    print(f"{tool:<16} {r['precision']:<5} {r['tokens_per_second']:>12.0f} {mfu:>7} {mem:>10} "
          f"{(f'{ratio:.2f}x' if ratio else 'n/a'):>9}")
PY
}

case "${1:-}" in
  build) shift; build "$@" ;;
  bundle) shift; [ $# -eq 2 ] || die "usage: gpu-bench.sh bundle BINARY OUT"; bundle "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
