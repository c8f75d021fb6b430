#!/bin/sh
# Container entrypoint: make an arbitrary --user work and pick thread counts, then run the command.
set -eu

# Started as root (compose and make do, so that it works whoever owns the checkout): drop to the
# owner of the mounted runs folder, so data, checkpoints and logs on the host belong to the user who
# cloned the project, not to root. A root-owned folder means the invoking user is root: stay root.
runs_dir=${DS2_RUNS_DIR:-/work/runs}
if [ "$(id -u)" = 0 ] && [ -d "$runs_dir" ]; then
    owner=$(stat -c %u "$runs_dir")
    group=$(stat -c %g "$runs_dir")
    if [ "$owner" != 0 ]; then
        export HOME=/tmp/home-$owner
        mkdir -p "$HOME" && chown "$owner:$group" "$HOME"
        exec setpriv --reuid "$owner" --regid "$group" --clear-groups "$0" "$@"
    fi
fi

# `--user UID:GID` of a host user has no home in the image; MindSpore, numba and matplotlib want one.
if [ ! -w "${HOME:-/nonexistent}" ]; then
    export HOME=/tmp/home-$(id -u)
    mkdir -p "$HOME"
fi

# Threads: one per CPU the container may use (the cgroup quota, not the host's core count), unless
# the user set them. Oversubscribing OpenMP threads on a CPU quota slows training badly.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc itself obeys OMP_NUM_THREADS
if [ -r /sys/fs/cgroup/cpu.max ]; then                       # cgroup v2
    read -r quota period </sys/fs/cgroup/cpu.max
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then          # cgroup v1
    quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
    period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
else
    quota=max period=1
fi
if [ "$quota" != max ] && [ "$quota" -gt 0 ]; then
    limited=$(( (quota + period - 1) / period ))
    [ "$limited" -lt "$cpus" ] && cpus=$limited
fi
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    export OMP_NUM_THREADS=$cpus
fi
# MKL and OpenBLAS take one count: OMP_NUM_THREADS's (its outer level, of a list like 4,2) when it is a
# positive integer, else the usable CPUs. An invalid OMP_NUM_THREADS is left as the user set it, for
# envcheck to warn about, and not copied: it would disable these limits too.
outer=${OMP_NUM_THREADS%%,*}
case $outer in
    '' | *[!0-9]*) outer=$cpus ;;
esac
[ "$outer" -gt 0 ] || outer=$cpus
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$outer}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$outer}

exec "$@"
