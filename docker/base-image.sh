#!/usr/bin/env bash
# Build a Python 3.9 base image from Debian bullseye packages, for Docker hosts that cannot pull
# python:3.9-slim-bullseye from a registry. It gives what the Dockerfiles expect of the upstream
# image: python3.9 with venv and pip on PATH as `python3`, CA certificates, a UTF-8 locale.
#
#   docker/base-image.sh TAG [MIRROR]
#
# Needs root (debootstrap) and a reachable Debian mirror. Takes about 2 minutes.
set -euo pipefail

tag=${1:?usage: base-image.sh TAG [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
    echo "base-image: debootstrap needs root. Run 'sudo make base-image' once; later builds reuse the image." >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    echo "base-image: installing debootstrap (apt-get)" >&2
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

root=$(mktemp -d /tmp/ds2-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "base-image: debootstrap bullseye from $mirror into $root" >&2
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,locales-all \
    bullseye "$root" "$mirror" >/tmp/ds2-base-debootstrap.log 2>&1 \
    || { echo "base-image: debootstrap failed, last lines of /tmp/ds2-base-debootstrap.log:" >&2; tail -n 20 /tmp/ds2-base-debootstrap.log >&2; exit 1; }

# Same layout as the upstream image: `python` and `python3` on PATH, apt lists emptied.
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bullseye main
deb $mirror bullseye-updates main
deb http://deb.debian.org/debian-security bullseye-security main
SOURCES
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb

tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "ds2 base: Debian bullseye minbase + python3.9 (debootstrap)" \
    - "$tag" >/dev/null
docker run --rm "$tag" python3 -c 'import sys, venv, ssl; assert sys.version_info[:2] == (3, 9), sys.version; print("base-image: python", sys.version.split()[0])'
