#!/usr/bin/env bash
# Build (or reuse) the systemd test-host images used by Molecule and the end-to-end tests.
#
#   scripts/testhost-image.sh [--print] SUITE...     SUITE: bookworm | trixie
#
# Prints one image reference per suite: localhost/colab-testhost:<suite>-<recipe hash>.
# Order of preference: the image already in podman, the cache archive under
# ${XDG_CACHE_HOME:-~/.cache}/colab-gpu-runtime/images (kept outside the clone so fresh CI
# clones reuse it), a fresh debootstrap build from the Debian mirror this machine's apt uses.
set -euo pipefail

NAME=colab-testhost
PACKAGES=systemd,systemd-sysv,dbus,python3,sudo,iproute2,openssh-server,ca-certificates
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/colab-gpu-runtime/images"
SELF="${BASH_SOURCE[0]}"

log() { echo "testhost-image: $*" >&2; }

# The recipe is this script: any change to it yields a new tag.
recipe_hash() { sha256sum "$SELF" | cut -c1-12; }

# The Debian mirror is read from the machine's apt configuration at run time, never stored.
debian_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v -- '-security' | head -n1 || true)
  [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt sources"; exit 1; }
  echo "$uri"
}

build() {
  local suite=$1 ref=$2 rootfs
  rootfs=$(mktemp -d "/var/tmp/${NAME}-${suite}.XXXXXX")
  # shellcheck disable=SC2064  # expand now: the variable is local to this function
  trap "rm -rf '$rootfs'" EXIT
  log "building $ref with debootstrap (about a minute)"
  debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$rootfs" "$(debian_mirror)" >&2
  # A test host looks like a fresh cloud VM: sshd enabled, host keys present, machine-id empty
  # (systemd fills it at boot), no apt lists baked in.
  chroot "$rootfs" systemctl enable ssh.service >&2
  chroot "$rootfs" ssh-keygen -A >&2
  chroot "$rootfs" systemctl mask systemd-firstboot.service getty@tty1.service \
    console-getty.service systemd-logind.service >/dev/null 2>&1 || true
  : > "$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=podman' --change 'STOPSIGNAL SIGRTMIN+3' - "$ref" >&2
  rm -rf "$rootfs"
  trap - EXIT
}

ensure() {
  local suite=$1 ref archive
  ref="localhost/${NAME}:${suite}-$(recipe_hash)"
  archive="$CACHE_DIR/${NAME}-${suite}-$(recipe_hash).oci.tar"
  if podman image exists "$ref"; then
    :
  elif [ -s "$archive" ] && podman load -q -i "$archive" >&2 && podman image exists "$ref"; then
    log "loaded $ref from $archive"
  else
    build "$suite" "$ref"
    mkdir -p "$CACHE_DIR"
    podman save -q --format oci-archive -o "$archive.tmp" "$ref" && mv "$archive.tmp" "$archive"
    log "cached $ref in $archive"
  fi
  echo "$ref"
}

[ $# -gt 0 ] || { echo "usage: $0 bookworm|trixie ..." >&2; exit 2; }
for suite in "$@"; do
  case "$suite" in
    bookworm | trixie) ensure "$suite" ;;
    *) echo "unknown suite '$suite': use bookworm (Debian 12) or trixie (Debian 13)" >&2; exit 2 ;;
  esac
done
