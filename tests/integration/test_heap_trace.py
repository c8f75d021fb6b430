"""bench/heap_trace.c built on the host loads in the image and tells resident from reserved memory."""
import json
import shutil

import pytest

from .conftest import REPO, run

# In the image: 8 MiB written to, 8 MiB only reserved (glibc maps large blocks fresh), one freed
# block that must be gone, and a NumPy array; then the report, summarized by bench/heap_trace.py.
PROGRAM = """
import ctypes, json, numpy
from bench.heap_trace import owner, parse_report
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
written, reserved, freed = (libc.malloc(8 << 20) for _ in range(3))
ctypes.memset(written, 1, 8 << 20)
libc.free(freed)
array = numpy.ones(4 << 20, numpy.uint8)
libc.heap_trace_report(b"/trace/report.txt")
blocks = parse_report(open("/trace/report.txt").read())
print(json.dumps([[b["bytes"], b["resident"], owner(b["stack"])] for b in blocks]))
"""


def test_tracer_reports_live_blocks_resident_bytes_and_owner(docker_client, image, tmp_path):
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler on this host to build bench/heap_trace.c")
    library = tmp_path / "heap_trace.so"
    built = run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(REPO / "bench" / "heap_trace.c")])
    assert built.returncode == 0, built.stderr
    tmp_path.chmod(0o777)
    out = docker_client.containers.run(
        image, ["python", "-c", PROGRAM], remove=True, environment={"LD_PRELOAD": "/trace/heap_trace.so"},
        volumes={str(tmp_path): {"bind": "/trace", "mode": "rw"}}).decode()
    blocks = json.loads(out.strip().splitlines()[-1])
    eight = sorted((resident, name) for size, resident, name in blocks if size == 8 << 20)
    assert len(eight) == 2, blocks                      # the freed one is forgotten
    assert eight[0][0] < 1 << 20 and 8 << 20 <= eight[1][0] <= (8 << 20) + 4096, eight  # pages it spans
    assert ([name for size, _, name in blocks if size == 4 << 20]) == ["NumPy arrays"], blocks
