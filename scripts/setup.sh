#!/usr/bin/env bash
# Install everything xdh needs on a Debian 12 machine (run as root): the outer QEMU,
# mmdebstrap and friends from Debian's packages, then a venv with xdh in it (.venv/).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (mmdebstrap builds the guest images as root)" >&2
  exit 2
fi

packages=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client python3 python3-venv ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
echo "setup.sh: ready; xdh is .venv/bin/xdh"
