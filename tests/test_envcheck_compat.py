"""The measured compatibility matrix: lookup, nearest passing combination, the report line, and the real
envcheck/data/compat-matrix.json (well-formed, holds the required records, and no rule contradicts it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from envcheck import compat, diagnose
from envcheck.result import ProbeResult
from tests.envcheck_helpers import REPO, bare_venv, run_envcheck, write_dist, write_package

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "compat-matrix.json"
REAL = REPO / "envcheck" / "data" / "compat-matrix.json"
NDARRAY = "module 'numpy.typing' has no attribute 'NDArray'"


@pytest.fixture
def matrix():
    return compat.load(FIXTURE)


def installed(mindspore="2.8.0", numpy="1.20.0", numba="0.53.1", **others):
    versions = {"mindspore": mindspore, "numpy": numpy, "numba": numba, **others}
    return ProbeResult("distributions", "t", "pass", "s",
                       {"installed": {k: v for k, v in versions.items() if v is not None}})


def probe(probe_id, status, error=""):
    return ProbeResult(probe_id, "t", status, error or "ok", {"error": error} if error else {})


# --- the outcome of one measured combination -------------------------------------------------------

def test_status_of_a_combination():
    ok, broken = {"status": "pass"}, {"status": "fail", "error": "E"}
    assert compat.combination_status("refused", {}) == "refused"
    assert compat.combination_status("installed", {"import.numpy": ok, "mindspore.train_step": ok}) == "pass"
    assert compat.combination_status("installed", {"import.numpy": ok, "import.mindspore": broken}) == "fail"
    # ds2 runs without torch: torch-only failures are a warning
    assert compat.combination_status("installed", {"import.numpy": ok, "import.torch": broken}) == "warn"
    assert compat.combination_status("installed", {"import.mindspore+torch": broken}) == "warn"
    together = {"status": "fail", "error": "torch fails to import after numpy", "failed_module": "torch"}
    assert compat.combination_status("installed", {"import.together": together}) == "warn"
    assert compat.combination_status("installed", {"import.torch": broken, "import.numba": broken}) == "fail"


def test_first_error_names_the_deepest_broken_dependency():
    probes = {"mindspore.train_step": {"status": "fail", "error": "later"},
              "import.mindspore": {"status": "fail", "error": "AttributeError: x"},
              "import.numba": {"status": "pass"}}
    assert compat.first_error(probes) == "import.mindspore: AttributeError: x"
    assert compat.first_error({"import.numba": {"status": "pass"}}) == ""


# --- lookup and suggestion -------------------------------------------------------------------------

def test_lookup_is_exact_on_the_three_versions_and_skips_evidence_sets(matrix):
    record = compat.lookup(matrix, {"mindspore": "2.7.2", "numpy": "1.20", "numba": "0.53.1"})
    assert record["status"] == "pass" and "set" not in record        # not the newest-setuptools record
    assert compat.lookup(matrix, {"mindspore": "2.7.2", "numpy": "1.20.1", "numba": "0.53.1"}) is None
    assert all("set" not in r for r in compat.measured(matrix))


def test_nearest_passing_changes_the_fewest_pins(matrix):
    current = {"mindspore": "2.8.0", "numpy": "1.20.0", "numba": "0.53.1"}
    nearest = compat.nearest_passing(matrix, current)
    # one pin each, one release away: mindspore down to 2.7.2, or numpy up to 1.21.6
    assert [compat.describe(r) for r in nearest] == ["mindspore 2.7.2 + numpy 1.20.0 + numba 0.53.1",
                                                     "mindspore 2.8.0 + numpy 1.21.6 + numba 0.53.1"]
    assert compat.pins(nearest[0], current) == ["mindspore==2.7.2"]
    # from here every passing record changes all three; the one that moves the fewest releases comes first,
    # and its numba comes with the llvmlite it was measured with
    far = {"mindspore": "2.9.0", "numpy": "2.0.2", "numba": "0.60.0"}
    best = compat.nearest_passing(matrix, far)
    assert len(best) == 3 and all(all(r[a] != far[a] for a in compat.AXES) for r in best)
    assert compat.pins(best[0], far) == ["mindspore==2.8.0", "numpy==1.21.6", "numba==0.58.0", "llvmlite==0.41.1"]


def test_nearest_passing_of_an_unmeasured_version_counts_releases_between(matrix):
    nearest = compat.nearest_passing(matrix, {"mindspore": "2.8.5", "numpy": "1.21.6", "numba": "0.53.1"})
    assert compat.describe(nearest[0]) == "mindspore 2.8.0 + numpy 1.21.6 + numba 0.53.1"


# --- the report line -------------------------------------------------------------------------------

def test_measured_failure_confirmed_here_is_cited_with_its_nearest_passing_neighbour():
    results = [installed(), probe("import.mindspore", "fail", f"AttributeError: {NDARRAY}")]
    [line] = compat.check(results, FIXTURE)
    assert line.id == "compat" and line.status == "fail"
    assert NDARRAY in line.summary and "mindspore 2.8.0 + numpy 1.20.0 + numba 0.53.1" in line.summary
    [why] = line.diagnosis
    assert "2026-01-02" in why.explanation and "test machine" in why.explanation
    assert "mindspore 2.7.2 + numpy 1.20.0 + numba 0.53.1" in why.explanation
    assert why.fix[0].startswith("python -m pip install 'mindspore==2.7.2'")
    assert why.fix[1].startswith("python -m pip install 'numpy==1.21.6'")


def test_measured_warning_is_a_warning():
    results = [installed(mindspore="2.7.2", numpy="1.26.4", numba="0.60.0"),
               probe("import.torch", "fail", "RuntimeError: Numpy is not available")]
    [line] = compat.check(results, FIXTURE)
    assert line.status == "warn" and "Numpy is not available" in line.summary


def test_measured_failure_that_passes_here_is_information_naming_what_differs():
    results = [installed(pillow="9.5.0", torch="1.7.1", llvmlite="0.36.0"), probe("import.mindspore", "pass")]
    [line] = compat.check(results, FIXTURE)
    assert line.status == "info" and "import.mindspore pass here" in line.summary
    assert "pillow 11.3.0 there, 9.5.0 here" in line.summary


def test_measured_failure_in_a_probe_this_run_skips_is_information():
    [line] = compat.check([installed()], FIXTURE)
    assert line.status == "info" and "does not check" in line.summary


def test_passing_refused_and_unmeasured_combinations():
    [passing] = compat.check([installed(mindspore="2.7.2")], FIXTURE)
    assert passing.status == "pass" and "measured passing (2026-01-02, test machine)" in passing.summary
    [refused] = compat.check([installed(mindspore="2.9.0", numpy="2.0.2", numba="0.60.0")], FIXTURE)
    assert refused.status == "info" and "refuses" in refused.summary and "Cannot install" in refused.summary
    [unknown] = compat.check([installed(numba="0.55.1")], FIXTURE)
    assert unknown.status == "info" and "not in the measured matrix" in unknown.summary
    assert "nearest measured passing: mindspore 2.8.0 + numpy 1.20.0" not in unknown.summary
    assert "nearest measured passing: " in unknown.summary


def test_nothing_to_compare():
    assert compat.check([probe("import.numpy", "pass")], FIXTURE) == []       # no distributions probe
    [partial] = compat.check([installed(numba=None)], FIXTURE)
    assert partial.status == "skip" and "numba not installed" in partial.summary
    [missing] = compat.check([installed()], FIXTURE.parent / "no-such-matrix.json")
    assert missing.status == "skip" and "no measured matrix" in missing.summary


def test_the_report_cites_a_measured_failure_of_a_venv(tmp_path):
    """End to end: an interpreter with mindspore 2.8.0, numpy 1.20.0 and numba 0.53.1 installed (metadata)
    whose `import mindspore` fails as the real one does."""
    site = tmp_path / "site"
    for name, version in (("mindspore", "2.8.0"), ("numpy", "1.20.0"), ("numba", "0.53.1")):
        write_dist(site, name, version)
    write_package(site, "mindspore", f"raise AttributeError(\"{NDARRAY}\")\n")
    python = bare_venv(tmp_path / "venv")
    run = run_envcheck("--python", python, "--only", "distributions", "--only", "import.mindspore",
                       pythonpath=[site], env={compat.MATRIX_ENV: str(FIXTURE)}, as_json=False)
    assert run.code == 1, run.stderr
    assert "FAIL  compat" in run.stdout and NDARRAY in run.stdout
    assert "[compat-matrix]" in run.stdout and "python -m pip install 'mindspore==2.7.2'" in run.stdout


# --- the real matrix -------------------------------------------------------------------------------

def real_matrix():
    return compat.load(REAL)


def test_real_matrix_is_well_formed():
    matrix = real_matrix()
    records = compat.measured(matrix)
    assert len(records) >= 40
    assert len({tuple(r[a] for a in compat.AXES) for r in records}) == len(records)
    for record in matrix["combinations"]:
        assert all(record.get(axis) for axis in compat.AXES)
        assert record["install"] in ("installed", "refused") and record["date"] and record["machine"]
        assert record["status"] == compat.combination_status(record["install"], record.get("probes") or {})
        if record["install"] == "installed":
            assert record["probes"] and record["installed"]["mindspore"] == record["mindspore"]
            assert record["installed"]["numpy"] == record["numpy"] and record["installed"]["numba"] == record["numba"]
            assert record["first_error"] == compat.first_error(record["probes"])
        else:
            assert record["resolver_message"] and record["first_error"]
    assert matrix["runs"] and all(run["wall_s"] > 0 and run["machine"] for run in matrix["runs"])


def test_real_matrix_holds_the_known_failure_and_the_pinned_set():
    matrix = real_matrix()
    failing = compat.lookup(matrix, {"mindspore": "2.8.0", "numpy": "1.20.0", "numba": "0.53.1"})
    assert failing["status"] == "fail" and NDARRAY in failing["first_error"]
    pinned = compat.lookup(matrix, {"mindspore": "2.7.2", "numpy": "1.20.0", "numba": "0.53.1"})
    assert pinned["status"] == "pass"
    lock = next(r for r in matrix["combinations"] if r.get("set") == "cpu.lock")
    assert lock["status"] == "pass"
    assert compat.nearest_passing(matrix, {"mindspore": "2.8.0", "numpy": "1.20.0", "numba": "0.53.1"})


def _as_results(record):
    """The record's probes as results, with a distributions result holding its installed versions."""
    results = [ProbeResult("distributions", "t", "pass", "s", {"installed": record["installed"]})]
    for probe_id, measured in record["probes"].items():
        error = measured.get("error", "")
        results.append(ProbeResult(probe_id, "t", measured["status"], error or "ok", {"error": error}, 0.0, [], error))
    return results


def test_no_rule_contradicts_the_matrix():
    """Run the rules over every measured combination (its probes' statuses and first error lines, its installed
    versions as the distributions probe would report them). A combination measured passing must not be
    called broken (a rule with a severity firing); every probe failure of a combination measured failing
    must be explained by some rule (else the knowledge base has a gap the matrix shows)."""
    rules = {rule["id"]: rule for rule in diagnose.load_rules()}
    contradicted, unexplained = [], []
    for record in compat.measured(real_matrix()):
        if record["install"] != "installed":
            continue
        results = _as_results(record)
        measured = {r.id: r.status for r in results}
        diagnose.diagnose(results, list(rules.values()))
        name = compat.describe(record)
        raised = sorted({d.rule_id for r in results for d in r.diagnosis if rules[d.rule_id].get("severity")})
        if raised and record["status"] == "pass":
            contradicted.append(f"{name} was measured passing, but {raised} say otherwise")
        for result in results:
            if measured[result.id] == "fail" and not result.diagnosis:
                unexplained.append(f"{name}: {result.id}: {result.summary}")
    assert contradicted == []
    assert unexplained == []


# --- rules the matrix motivated --------------------------------------------------------------------

def test_numba_without_pkg_resources_under_setuptools_82(tmp_path):
    """numba 0.53.1's `import pkg_resources` in a venv whose setuptools (82.0.1) no longer ships it."""
    site = tmp_path / "site"
    write_dist(site, "setuptools", "82.0.1")
    write_dist(site, "numba", "0.53.1", requires=["setuptools", "numpy>=1.15"])
    write_package(site, "numba", "import pkg_resources\n")
    python = bare_venv(tmp_path / "venv")
    run = run_envcheck("--python", python, "--only", "import.numba", "--only", "distributions", pythonpath=[site])
    assert "No module named 'pkg_resources'" in run.probe("import.numba")["summary"]
    diagnosis = run.diagnosis("import.numba", "setuptools-82-no-pkg-resources")
    assert "setuptools here: 82.0.1" in diagnosis["title"]
    assert "setuptools<82" in " ".join(diagnosis["fix"])


# --- the measuring script's bookkeeping (the measurement itself is `make compat-matrix`) ------------

def test_matrix_script_expands_axes_and_summarises():
    from bench import compat_matrix
    axes = {"mindspore": ["2.7.2", "2.8.0"], "numpy": ["1.20.0", "2.0.2"],
            "numba": {"1.20.0": ["0.53.1", "0.56.4"], "2.0.2": ["0.53.1", "0.60.0"]}}
    combos = compat_matrix.combinations(axes)
    assert len(combos) == 8
    assert combos[0] == ("2.7.2", "1.20.0", "0.53.1") and combos[-1] == ("2.8.0", "2.0.2", "0.60.0")
    lines = compat_matrix.summary(compat.load(FIXTURE))
    assert lines[-1] == "8 combinations: 4 pass, 1 warn, 2 fail, 1 refused"
    row_28 = next(line for line in lines if line.startswith("2.8.0 "))
    assert row_28.split()[1:] == ["F", "PP"]    # numpy 1.20.0: numba 0.53.1 fails; 1.21.6: both pairings pass


def test_matrix_script_keeps_the_resolver_explanation_without_hints():
    from bench import compat_matrix
    said = compat_matrix.resolver_said("  × No solution found when resolving dependencies:\n"
                                       "  ╰─▶ Because mindspore==2.8.0 depends on numpy<2.0.0 ...\n"
                                       "  hint: pass --verbose\n")
    assert said.splitlines() == ["× No solution found when resolving dependencies:",
                                 "╰─▶ Because mindspore==2.8.0 depends on numpy<2.0.0 ..."]


def test_matrix_script_records_its_command_without_the_machines_folders():
    from bench import compat_matrix
    argv = ["bench/compat_matrix.py", "--python", "/opt/pythons/3.9.18/bin/python",
            "--uv", ".venv-host/bin/uv", "--cache", "/var/cache/ds2-compat",
            "--out", str(REPO / "envcheck" / "data" / "compat-matrix.json")]
    assert compat_matrix.portable_command(argv) == (
        "compat_matrix.py --python python --uv .venv-host/bin/uv --cache ds2-compat "
        "--out envcheck/data/compat-matrix.json")
