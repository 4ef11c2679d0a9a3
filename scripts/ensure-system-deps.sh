#!/usr/bin/env bash
# Install the controller's system packages that are missing (Debian/Ubuntu, as root or via sudo).
#   scripts/ensure-system-deps.sh COMMAND...   e.g. podman runc debootstrap ssh sshd
# Only the commands given are checked; nothing is installed when they are all present.
set -euo pipefail

declare -A PACKAGE_OF=(
  [podman]=podman [runc]=runc [debootstrap]=debootstrap [ssh]=openssh-client
  [ssh-keygen]=openssh-client [sshd]=openssh-server [chromium]=chromium
  [ss]=iproute2 [curl]=curl
)

missing=()
for cmd in "$@"; do
  pkg=${PACKAGE_OF[$cmd]:?"no package known for command '$cmd'"}
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}; install them with your package manager (apt-get not found)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
