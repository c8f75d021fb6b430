#!/usr/bin/env bash
# Build the CPU or GPU image with the right base, CA certificates, builder and labels, unless an image
# built from the same inputs already carries the tag.
#   build-image.sh cpu|gpu TAG
#   build-image.sh cpu|gpu --inputs-digest BASE_IMAGE_ID   (print the inputs digest, build nothing)
# Environment: BASE_IMAGE, FALLBACK_BASE_IMAGE (defaults in .env: the upstream base, and the one
# `make base-image` bootstraps where no registry answers), EXTRA_CA_CERTS (a PEM file; default: the
# host's CA bundle when the host trusts extra CAs, see docker/certs/README.md), DOCKER (the docker CLI).
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too
flavor=${1:?usage: build-image.sh cpu|gpu TAG}
tag=${2:?usage: build-image.sh cpu|gpu TAG}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
dockerfile=Dockerfile.$flavor
docker=${DOCKER:-docker}

say() { echo "build-image: $*" >&2; }
# A NAME=value default from the checkout's .env (the file Compose and the Makefile read too).
dotenv() { sed -n "s/^$1=//p" "$repo/.env"; }
base=${BASE_IMAGE:-$(dotenv DS2_BASE_IMAGE)}
fallback=${FALLBACK_BASE_IMAGE:-$(dotenv DS2_FALLBACK_BASE_IMAGE)}

# The sources of the Dockerfile's COPY lines that come from the build context (not --from=another
# stage), one per line; docker/certs is left out (see inputs_digest).
copy_sources() {
    awk '/\\$/ { line = line substr($0, 1, length($0) - 1) " "; next }
         { $0 = line $0; line = "" }
         toupper($1) == "COPY" || toupper($1) == "ADD" {
             if ($2 ~ /^\[/) { print "build-image: cannot read the JSON form of " $1 " in " FILENAME > "/dev/stderr"; exit 1 }
             from_context = 1; n = 0
             for (i = 2; i <= NF; i++) {
                 if ($i ~ /^--from=/) from_context = 0
                 else if ($i !~ /^--/) args[++n] = $i
             }
             if (from_context) for (i = 1; i < n; i++) if (args[i] !~ /^docker\/certs/) print args[i]
         }' "$1"
}

# What decides the image's content, as one SHA-256: the Dockerfile, the base image's ID, and the path,
# mode and content of every file the Dockerfile copies from the build context, less what .dockerignore
# keeps out of it (its **/NAME lines: caches and bytecode). Not the CA certificates in docker/certs:
# they only let pip reach the index and never reach the runtime image. Not the git revision label.
inputs_digest() {
    local base_id=$1 listed sources=() prune=(-false) pattern
    listed=$(copy_sources "$dockerfile")
    mapfile -t sources <<<"$listed"
    while read -r pattern; do
        prune+=(-o -name "$pattern")
    done < <(sed -n 's|^\*\*/||p' .dockerignore)
    {
        echo "base $base_id"
        sha256sum "$dockerfile"
        find "${sources[@]}" \( "${prune[@]}" \) -prune -o \( -type f -o -type l \) -printf '%m %p %l\n' | LC_ALL=C sort
        find "${sources[@]}" \( "${prune[@]}" \) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    } | sha256sum | cut -c1-64
}

# build-image.sh cpu|gpu --inputs-digest BASE_IMAGE_ID prints the digest of the checkout's inputs on
# that base and stops, without an engine (tests compare digests with it).
if [ "$tag" = --inputs-digest ]; then
    base_id=${3:?usage: build-image.sh cpu|gpu --inputs-digest BASE_IMAGE_ID}
    cd "$repo"
    inputs_digest "$base_id"
    exit 0
fi

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

if [ -n "${EXTRA_CA_CERTS:-}" ] && ! grep -q 'BEGIN CERTIFICATE' "$EXTRA_CA_CERTS" 2>/dev/null; then
    say "EXTRA_CA_CERTS=$EXTRA_CA_CERTS is not a readable PEM certificate file."
    exit 1
fi

image_id() { "$docker" image inspect -f '{{.Id}}' "$1" 2>/dev/null; }

current_digest() {
    "$docker" image inspect -f '{{index .Config.Labels "ds2.inputs-digest"}}' "$tag" 2>/dev/null || true
}

cd "$repo"

# Is the image current? Checked against the base as it is here (the requested one, else the fallback),
# without touching the network, so every target that needs the image pays well under a second for it.
local_base=
if image_id "$base" >/dev/null; then
    local_base=$base
elif image_id "$fallback" >/dev/null; then
    local_base=$fallback
fi
if [ -n "$local_base" ]; then
    digest=$(inputs_digest "$(image_id "$local_base")")
    if [ "$(current_digest)" = "$digest" ]; then
        say "$tag is current (built from these inputs on $local_base, digest ${digest:0:12}); not rebuilding"
        exit 0
    fi
fi

# The base image: present locally, or pulled, or (no registry) the bootstrapped fallback.
if ! image_id "$base" >/dev/null; then
    if pull_error=$("$docker" pull -q "$base" 2>&1); then
        say "pulled $base"
    else
        say "cannot pull $base: $(echo "$pull_error" | tail -n1)
  No container registry is reachable from this host (offline, firewalled, or a mirror is needed). Using
  $fallback instead: the same Python 3.9 on Debian bullseye, built from Debian packages by
  'make base-image' (docker/base-image.sh). To use another base, pass BASE_IMAGE=<image>."
        if ! image_id "$fallback" >/dev/null; then
            say "building $fallback (about 2 minutes, once)"
            "$here/base-image.sh" "$fallback"
        fi
        base=$fallback
    fi
fi
digest=$(inputs_digest "$(image_id "$base")")

# CA certificates for pip in the builder stage: EXTRA_CA_CERTS when given, else the host's own bundle
# when the host trusts CAs beyond its distribution's (a TLS-intercepting proxy's, typically). Copied
# into the build context, which keeps them for Compose builds too; removed when there are none.
anchor_dirs="/usr/local/share/ca-certificates /etc/pki/ca-trust/source/anchors
    /etc/ca-certificates/trust-source/anchors /etc/pki/trust/anchors /usr/share/pki/trust/anchors"
host_bundles="/etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/ca-bundle.pem
    /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
rm -f "$here/certs/extra-ca.crt"
if [ -n "${EXTRA_CA_CERTS:-}" ]; then
    cp "$EXTRA_CA_CERTS" "$here/certs/extra-ca.crt"
    say "builder stage trusts the CA certificates in $EXTRA_CA_CERTS (EXTRA_CA_CERTS)"
else
    anchors=$(for dir in $anchor_dirs; do [ -n "$(find "$dir" -type f 2>/dev/null | head -n1)" ] && echo "$dir"; done || true)
    bundle=$(for file in $host_bundles; do grep -ls 'BEGIN CERTIFICATE' "$file"; done | head -n1 || true)
    if [ -n "$anchors" ] && [ -n "$bundle" ]; then
        cp "$bundle" "$here/certs/extra-ca.crt"
        say "this host trusts extra CAs ($(echo $anchors | tr ' ' ,)): the builder stage trusts its bundle $bundle (EXTRA_CA_CERTS=<pem file> overrides)"
    elif [ -n "$anchors" ]; then
        say "this host trusts extra CAs ($(echo $anchors | tr ' ' ,)) but has no CA bundle where expected ($(echo $host_bundles | tr ' ' ,)); if pip fails with CERTIFICATE_VERIFY_FAILED, pass EXTRA_CA_CERTS=<pem file>"
    fi
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

say "building $tag from $dockerfile on $base (BuildKit=$DOCKER_BUILDKIT, revision $revision, inputs digest ${digest:0:12})"
start=$(date +%s)
"$docker" build -f "$repo/$dockerfile" -t "$tag" \
    --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" --build-arg GIT_REVISION="$revision" \
    --label ds2.inputs-digest="$digest" \
    "$repo"
say "built $tag in $(( $(date +%s) - start )) s; size $("$docker" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
