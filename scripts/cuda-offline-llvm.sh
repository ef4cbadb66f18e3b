#!/usr/bin/env bash
# Prepares this machine so that `cargo build --features cuda` builds without
# network access (offline CI, cluster nodes).
#
# burn 0.22.1's CUDA backend depends on tracel-llvm, whose build script
# (tracel-llvm-bundler) downloads an LLVM 23 bundle unless its install
# directory already holds a marker file; after that it only asks that
# directory's `bin/llvm-config` for compile and link flags. This script puts
# Debian's LLVM 22 in the bundle's place:
#
#   1. installs llvm-22-dev, libpolly-22-dev and libzstd-dev with apt-get
#      (when missing; skipped with --no-apt);
#   2. writes ${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4/
#      with the marker `.tracel-llvm-installed` and a `bin/llvm-config` that
#      runs LLVM 22's llvm-config and turns absolute
#      /usr/lib/x86_64-linux-gnu/libNAME.so paths in its output into -lNAME
#      (cargo's link lines take names, not paths).
#
# cram's `cuda` feature selects cubecl-cuda's `cpp` compiler, so CUDA kernels
# are compiled at run time by NVRTC and the LLVM linked here is never called
# (which is why LLVM 22 can stand in for the bundle's LLVM 23 C API).
#
# At run time CUDA needs the NVIDIA driver (libcuda.so), NVRTC (libnvrtc.so)
# and the CUDA headers (found through CUDA_PATH, else /usr/local/cuda).
#
# Usage: scripts/cuda-offline-llvm.sh [--no-apt] [--check]
#   --no-apt  do not install packages; fail with the list if any is missing
#   --check   only report whether the machine is prepared (exit 1 if not)
set -euo pipefail

LLVM_MAJOR=22
BUNDLE=tracel-llvm-23.1.0-4
PACKAGES=("llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" "libzstd-dev")
SYSTEM_LLVM_CONFIG="/usr/lib/llvm-${LLVM_MAJOR}/bin/llvm-config"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
BUNDLE_DIR="$DATA_HOME/tracel/$BUNDLE"

apt=1
check_only=0
for arg in "$@"; do
  case "$arg" in
    --no-apt) apt=0 ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "cuda-offline-llvm.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "$check_only" = 1 ]; then
  ok=1
  if [ "${#missing[@]}" -gt 0 ]; then echo "missing packages: ${missing[*]}"; ok=0; fi
  if [ ! -f "$BUNDLE_DIR/.tracel-llvm-installed" ] || [ ! -x "$BUNDLE_DIR/bin/llvm-config" ]; then
    echo "no stand-in LLVM bundle in $BUNDLE_DIR"; ok=0
  fi
  if [ "$ok" = 1 ]; then echo "prepared: $BUNDLE_DIR -> LLVM $LLVM_MAJOR"; exit 0; fi
  exit 1
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$apt" = 0 ]; then
    echo "cuda-offline-llvm.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  install them (apt-get install ${missing[*]}) or run without --no-apt" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "== installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$SYSTEM_LLVM_CONFIG" ]; then
  echo "cuda-offline-llvm.sh: $SYSTEM_LLVM_CONFIG is missing after installing ${PACKAGES[*]}" >&2
  exit 1
fi

mkdir -p "$BUNDLE_DIR/bin"
cat >"$BUNDLE_DIR/bin/llvm-config" <<WRAPPER
#!/usr/bin/env bash
# Written by cram's scripts/cuda-offline-llvm.sh: Debian's LLVM ${LLVM_MAJOR} in place of the
# ${BUNDLE} bundle. Absolute shared-library paths become -lNAME for cargo's link lines.
set -o pipefail
out="\$("${SYSTEM_LLVM_CONFIG}" "\$@")" || exit \$?
printf '%s\n' "\$out" | sed -E 's#/usr/lib/x86_64-linux-gnu/lib([^ /]+)\.so(\.[0-9.]+)?#-l\1#g'
WRAPPER
chmod +x "$BUNDLE_DIR/bin/llvm-config"
: >"$BUNDLE_DIR/.tracel-llvm-installed"

echo "prepared: $BUNDLE_DIR -> LLVM $("$BUNDLE_DIR/bin/llvm-config" --version)"
echo "now: cargo build --release --features cuda   (no network needed)"
