#!/usr/bin/env bash
# Make what `make image-test` needs on a machine without a Docker engine or image registry:
# podman, runc and debootstrap from Debian's packages, and a local Python base image made with
# debootstrap (docs/deploying.md#building-the-image-with-podman). Idempotent: what exists is
# kept. Needs root (apt-get, debootstrap). On a fresh machine ~2-3 min, else a second.
set -euo pipefail
BASE=${BASE_IMAGE:-localhost/pybase:bookworm}

missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "image-setup: installing ${missing[*]} (apt-get, ~1 min)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi

if ! podman image exists "$BASE"; then
  echo "image-setup: making the base image $BASE with debootstrap (~1-2 min, ~275 MB)"
  root=$(mktemp -d /var/tmp/pybase.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
    bookworm "$root" >/dev/null
  tar -C "$root" -c . | podman import - "$BASE" >/dev/null
fi
echo "image-setup: podman $(podman --version | awk '{print $3}'), base image $BASE ready"
