#!/usr/bin/env bash
# Install everything xdh needs on a Debian 12 machine (run as root): the outer QEMU,
# mmdebstrap and friends from Debian's packages, then a venv with xdh in it (.venv/).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (mmdebstrap builds the guest images as root)" >&2
  exit 2
fi

packages=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client python3 python3-venv ca-certificates
          git rsync)   # the last two: the CI-engine test (gitlab-ci-local clones jobs with them)
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

# The CI-engine test runs ci/gitlab/nightly.yml with gitlab-ci-local (npm; 4.73 is the last that
# runs on Node.js 20), installed into the venv: nothing outside .venv/ is touched by npm.
GLCL=4.73.0
if [ "$(.venv/node/node_modules/.bin/gitlab-ci-local --version 2>/dev/null)" != "$GLCL" ]; then
  if ! command -v npm >/dev/null; then
    echo "setup.sh: installing nodejs npm (for the CI-engine test)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
  fi
  npm install --silent --no-audit --no-fund --prefix .venv/node "gitlab-ci-local@$GLCL"
fi
echo "setup.sh: ready; xdh is .venv/bin/xdh"
