#!/bin/bash
# Create a venv (default /opt/venv) and install a lock file into it, every wheel checked against its hash.
#   install-python-deps.sh LOCK_FILE [VENV]
# Runs in the builder stage. CA certificates that build-image.sh put in docker/certs (copied to
# /tmp/extra-ca) are added to the system bundle for pip only; see docker/certs/README.md.
set -euo pipefail
lock=$1
venv=${2:-/opt/venv}

bundle=/etc/ssl/certs/ca-certificates.crt
if ls /tmp/extra-ca/*.crt >/dev/null 2>&1; then
    cat "$bundle" /tmp/extra-ca/*.crt >/tmp/ca-bundle.pem
    bundle=/tmp/ca-bundle.pem
    echo "install-python-deps: trusting extra CA certificates: $(ls /tmp/extra-ca/*.crt | tr '\n' ' ')"
fi

python3 -m venv "$venv"
# Debian's venv seeds a 'pkg-resources 0.0.0' placeholder; the lock's setuptools provides the real one.
"$venv"/bin/pip uninstall -q -y pkg-resources 2>/dev/null || true
# --no-deps: the lock is complete, so pip installs exactly what it lists and nothing else.
if ! "$venv"/bin/pip install --no-cache-dir --disable-pip-version-check --cert "$bundle" \
    --require-hashes --no-deps -r "$lock" 2>&1 | tee /tmp/pip.log; then
    if grep -q CERTIFICATE_VERIFY_FAILED /tmp/pip.log; then
        echo "install-python-deps: pip could not verify the package index's TLS certificate: a proxy that" \
             "intercepts TLS is in the way and this build does not trust its CA. Install that CA on the host" \
             "(Debian/Ubuntu: /usr/local/share/ca-certificates, then update-ca-certificates) or give it to the" \
             "build: make image-cpu EXTRA_CA_CERTS=/path/to/ca.pem (see docker/certs/README.md)." >&2
    fi
    exit 1
fi
"$venv"/bin/pip check
rm -f /tmp/ca-bundle.pem
