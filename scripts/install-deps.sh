#!/usr/bin/env bash
# Installs every Debian package that building and testing vpdarts needs,
# only those that are missing. Usage: scripts/install-deps.sh [--bench] [--docs] [--fashion] [--fuzz]
set -euo pipefail

packages=(g++ cmake make pkg-config ccache
          libeigen3-dev libxtensor-dev libboost-dev catch2 libstb-dev
          nlohmann-json3-dev zlib1g-dev libbenchmark-dev python3
          libopenmpi-dev openmpi-bin  # MPI: the data-parallel tool and its tests (cmake -DVPDARTS_MPI=OFF goes without)
          python3-dev pybind11-dev python3-numpy python3-pytest  # the Python module (cmake -DVPDARTS_PYTHON=OFF goes without)
          python3-torch  # the Python tests check the PyTorch export's logits against vpdarts'
          libdnnl-dev)  # oneDNN: --precision bf16 on AVX512-BF16 / AMX CPUs (cmake -DVPDARTS_BF16=OFF goes without)
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(libopenblas0-pthread) ;;  # the PyTorch peer (python3-torch is always installed)
    --docs) packages+=(doxygen) ;;
    --fashion) packages+=(dataset-fashion-mnist python3-matplotlib) ;;  # the study and its report's pictures
    --fuzz) packages+=(clang libclang-rt-14-dev) ;;
    *) echo "install-deps.sh: unknown option '$arg' (expected --bench, --docs, --fashion or --fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps.sh: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
