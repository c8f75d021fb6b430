#!/bin/sh
# Runtime system packages and the non-root user. Runs in the runtime stage.
#   libsndfile1  soundfile decodes FLAC/WAV through it
#   libgomp1     OpenMP runtime that MindSpore's CPU kernels link
#   espeak-ng    renders the embedded synthetic corpus
#   sox, flac    audio conversion for user data
set -eu
export DEBIAN_FRONTEND=noninteractive
packages="libsndfile1 libgomp1 espeak-ng sox flac procps"
apt-get update -q
if ! apt-get install -y -q --no-install-recommends $packages; then
    # Seen on our mirror: bullseye-security lists espeak-ng 1.50+dfsg-7+deb11u2 but serves 404 for
    # that .deb. Retry from the release suites alone rather than fail the whole build.
    echo "install-system-deps: install failed; retrying without the security suite" >&2
    grep -v -- '-security' /etc/apt/sources.list >/tmp/sources-no-security.list || true
    rm -f /etc/apt/sources.list.d/debian.sources
    mv /tmp/sources-no-security.list /etc/apt/sources.list
    apt-get update -q
    apt-get install -y -q --no-install-recommends $packages
fi
rm -rf /var/lib/apt/lists/*

# Containers normally run as the invoking host user (make and compose pass --user) so files in the
# host volumes belong to that user. This account is the default for a plain `docker run`.
useradd --create-home --uid 1000 --shell /bin/bash ds2
mkdir -p /work && chown ds2:ds2 /work
