"""What a container may use: the entrypoint's thread count is ds2's usable_cpus(), and ds2 needs no
/dev/shm beyond Docker's default (its loader is a thread), so envcheck does not warn about it."""
import pytest


@pytest.mark.parametrize("limits", [{"nano_cpus": 1_000_000_000}, {"nano_cpus": 1_500_000_000},
                                    {"cpuset_cpus": "0"}, {}],
                         ids=["cpus-1", "cpus-1.5", "cpuset-0", "no-limit"])
def test_entrypoint_threads_are_ds2s_usable_cpus(docker_client, image, limits):
    # The entrypoint's shell arithmetic (OMP_NUM_THREADS) against the one Python implementation.
    out = docker_client.containers.run(
        image, ["sh", "-c", 'echo "$OMP_NUM_THREADS $(python -c "from ds2.runtime import usable_cpus; '
                            'print(usable_cpus())")"'], remove=True, **limits).decode().split()
    assert out[0] == out[1], f"entrypoint {out[0]} threads, ds2.runtime.usable_cpus() {out[1]}"


def test_envcheck_is_ready_with_dockers_default_shm(docker_client, image):
    # No --shm-size: Docker's 64 MiB /dev/shm. A plain run of the image's default command must be ready.
    container = docker_client.containers.run(image, detach=True)
    try:
        code = container.wait(timeout=900)["StatusCode"]
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert code == 0, logs[-4000:]
    assert "shm" not in logs


@pytest.mark.parametrize("omp, blas", [("3", "3"), ("4,2", "4"), ("abc", None), ("0", None), ("1.5", None)])
def test_entrypoint_passes_only_a_valid_omp_num_threads_to_mkl_and_openblas(docker_client, image, omp, blas):
    # An invalid OMP_NUM_THREADS stays as the user set it (envcheck's threads probe warns about it); MKL and
    # OpenBLAS get the usable CPUs instead of a copy that would switch their limits off too.
    out = docker_client.containers.run(
        image, ["sh", "-c", 'echo "$OMP_NUM_THREADS|$MKL_NUM_THREADS|$OPENBLAS_NUM_THREADS|'
                            '$(python -c "from ds2.runtime import usable_cpus; print(usable_cpus())")"'],
        environment={"OMP_NUM_THREADS": omp}, remove=True).decode().strip()
    kept, mkl, openblas, usable = out.split("|")
    assert kept == omp
    assert mkl == openblas == (blas or usable)
