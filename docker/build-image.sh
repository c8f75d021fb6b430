#!/usr/bin/env bash
# Build the CPU or GPU image with the right base, CA certificates, builder and labels.
#   build-image.sh cpu|gpu TAG
# Environment: BASE_IMAGE (default python:3.9-slim-bullseye), FALLBACK_BASE_IMAGE (built by
# `make base-image` when the default cannot be pulled), EXTRA_CA_CERTS (a PEM file, see
# docker/certs/README.md), DOCKER (the docker CLI to use).
set -euo pipefail
flavor=${1:?usage: build-image.sh cpu|gpu TAG}
tag=${2:?usage: build-image.sh cpu|gpu TAG}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
docker=${DOCKER:-docker}
base=${BASE_IMAGE:-python:3.9-slim-bullseye}
fallback=${FALLBACK_BASE_IMAGE:-ds2-base:py3.9-bullseye}

say() { echo "build-image: $*" >&2; }

if ! command -v "$docker" >/dev/null 2>&1; then
    say "no '$docker' command on this host. Install Docker (Debian/Ubuntu: 'sudo bash docker/install-engine.sh', elsewhere https://docs.docker.com/engine/install/) and run this again."
    exit 1
fi
if ! engine_error=$("$docker" info 2>&1 >/dev/null); then
    say "the Docker engine is not reachable: $(echo "$engine_error" | grep -m1 -i -e error -e cannot || echo "$engine_error" | head -n1)
  The docker command is installed but no engine answers. Start it ('sudo systemctl start docker', or
  'sudo dockerd &' where there is no systemd; 'sudo bash docker/install-engine.sh' does either), and if it
  runs but you get 'permission denied', add yourself to the docker group ('sudo usermod -aG docker \$USER',
  then log in again)."
    exit 1
fi

# The base image: present locally, or pulled, or (no registry) the bootstrapped fallback.
if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
    if pull_error=$("$docker" pull -q "$base" 2>&1); then
        say "pulled $base"
    else
        say "cannot pull $base: $(echo "$pull_error" | tail -n1)
  No container registry is reachable from this host (offline, firewalled, or a mirror is needed). Using
  $fallback instead: the same Python 3.9 on Debian bullseye, built from Debian packages by
  'make base-image' (docker/base-image.sh). To use another base, pass BASE_IMAGE=<image>."
        if ! "$docker" image inspect "$fallback" >/dev/null 2>&1; then
            say "building $fallback (about 2 minutes, once)"
            "$here/base-image.sh" "$fallback"
        fi
        base=$fallback
    fi
fi

# Extra CA certificates are an explicit input: copied in when given, removed when not.
rm -f "$here/certs/extra-ca.crt"
if [ -n "${EXTRA_CA_CERTS:-}" ]; then
    if ! grep -q 'BEGIN CERTIFICATE' "$EXTRA_CA_CERTS" 2>/dev/null; then
        say "EXTRA_CA_CERTS=$EXTRA_CA_CERTS is not a readable PEM certificate file."
        exit 1
    fi
    cp "$EXTRA_CA_CERTS" "$here/certs/extra-ca.crt"
    say "builder stage trusts the CA certificates in $EXTRA_CA_CERTS"
fi

# BuildKit where this client can drive it (buildx plugin, or a pre-23 client with it built in);
# the classic builder otherwise. Both give the same image and both cache layers.
client_major=$("$docker" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
if "$docker" buildx version >/dev/null 2>&1 || [ "${client_major:-99}" -lt 23 ]; then
    export DOCKER_BUILDKIT=1
else
    export DOCKER_BUILDKIT=0
fi

revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$repo" status --porcelain -- ds2 envcheck docker tests bench Dockerfile.* 2>/dev/null)" ]; then
    revision="$revision-dirty"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")

say "building $tag from Dockerfile.$flavor on $base (BuildKit=$DOCKER_BUILDKIT, revision $revision)"
start=$(date +%s)
"$docker" build -f "$repo/Dockerfile.$flavor" -t "$tag" \
    --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" --build-arg GIT_REVISION="$revision" \
    "$repo"
say "built $tag in $(( $(date +%s) - start )) s; size $("$docker" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
