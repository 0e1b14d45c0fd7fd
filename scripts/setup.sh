#!/usr/bin/env bash
# Set up a fresh machine for fuse-harness: system packages and a venv with the Python deps.
# Idempotent and fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(flex bison libelf-dev libssl-dev bc cpio kmod make gcc libc6-dev perl xz-utils lz4
      qemu-system-x86 busybox-static ccache udev openssh-server openssh-client
      python3-venv git rsync fio dpkg apt debian-archive-keyring chromium)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "E: missing system packages: ${missing[*]}" >&2
    echo "E: run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 3
  fi
  echo "I: installing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# udev is used inside the guest (it sees the host's root): without it the guest gets no
# virtio-serial links and vng returns 255 even on success. Installing it is enough.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "I: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.fuse-harness-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "I: installing Python packages into .venv" >&2
  if ! .venv/bin/pip install -e '.[dev]' > .venv/pip-install.log 2>&1; then
    tail -20 .venv/pip-install.log >&2
    echo "E: pip install failed; full log: .venv/pip-install.log" >&2
    exit 3
  fi
  echo "$want" > "$stamp"
fi
echo "I: setup complete (.venv/bin/fuse-harness)" >&2
