"""envcheck sees what Python will import: files in the working directory, on PYTHONPATH or added by a .pth
file that shadow a module ds2 imports, built for real in temporary folders."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from envcheck import shadows
from envcheck.probes import import_path
from tests.envcheck_helpers import bare_venv, run_envcheck, write_dist, write_package

NUMPY_STUB = "x = 1\n"   # what a user's own numpy.py (a script named after the library) looks like to numpy's users


def test_numpy_py_in_the_working_directory_is_a_fail_naming_it(tmp_path):
    (tmp_path / "numpy.py").write_text(NUMPY_STUB)
    run = run_envcheck("--only", "import.path", "--only", "import.numpy", cwd=tmp_path)
    assert run.code == 1, run.stderr
    probe = run.probe("import.path")
    assert probe["status"] == "fail"
    shadow = probe["details"]["shadowed"][0]
    assert shadow["module"] == "numpy" and shadow["file"] == str(tmp_path / "numpy.py")
    assert shadow["via"] == shadows.WORKING_DIRECTORY and shadow["hides"].endswith("numpy")
    diagnosis = run.diagnosis("import.path", "module-shadowed")
    assert f"Rename or move {tmp_path / 'numpy.py'}" in diagnosis["fix"][0]
    # The import probe ran with the same path, imported the stub, and says why it fails.
    numpy = run.probe("import.numpy")
    assert numpy["status"] == "fail" and "has no attribute" in numpy["summary"]
    assert "module-shadowed" in run.rules("import.numpy")


def test_the_same_file_elsewhere_is_not_a_finding(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "numpy.py").write_text(NUMPY_STUB)
    run = run_envcheck("--only", "import.path", "--only", "import.numpy", cwd=tmp_path / "elsewhere")
    assert run.code == 0, run.stdout
    assert run.probe("import.path")["details"]["checked"] > 20


def test_a_package_directory_on_pythonpath_that_raises_is_named_by_every_probe_it_breaks(tmp_path):
    write_package(tmp_path / "site", "numpy", 'raise ImportError("this numpy is a leftover")\n')
    run = run_envcheck("--only", "import.path", "--only", "import.numpy", "--only", "import.scipy",
                       pythonpath=[tmp_path / "site"])
    shadow = run.probe("import.path")["details"]["shadowed"][0]
    assert shadow["file"] == str(tmp_path / "site" / "numpy") and shadow["via"] == "PYTHONPATH"
    fix = run.diagnosis("import.path", "module-shadowed")["fix"][0]
    assert f"Take {tmp_path / 'site'} off PYTHONPATH" in fix and "unset PYTHONPATH" in fix
    # The module raised, so it is gone from sys.modules: the probes find it in their tracebacks.
    for probe_id in ("import.numpy", "import.scipy"):
        assert run.probe(probe_id)["status"] == "fail"
        assert "module-shadowed" in run.rules(probe_id)
        assert run.probe(probe_id)["details"]["shadowed"][0]["module"] == "numpy"


SHADOWED = ["numpy", "scipy", "numba", "librosa", "soundfile", "torch", "Levenshtein", "mindspore", "yaml", "tqdm"]


def test_every_module_ds2_needs_is_checked_whether_file_or_directory(tmp_path):
    # Half as a file in the working directory, half as a package directory on PYTHONPATH; one run names all.
    site = tmp_path / "site"
    for i, module in enumerate(SHADOWED):
        if i % 2:
            write_package(site, module, "")
        else:
            (tmp_path / f"{module}.py").write_text("")
    run = run_envcheck("--only", "import.path", cwd=tmp_path, pythonpath=[site])
    found = {s["module"]: s for s in run.probe("import.path")["details"]["shadowed"]}
    assert sorted(found) == sorted(SHADOWED)
    for i, module in enumerate(SHADOWED):
        assert found[module]["via"] == ("PYTHONPATH" if i % 2 else shadows.WORKING_DIRECTORY)
        assert found[module]["hides"]  # each one hides the installed module


def test_the_modules_checked_come_from_ds2_code_and_its_dependencies():
    modules = set(import_path.checked_modules())
    assert {"numpy", "yaml", "tqdm", "mindspore", "json", "argparse"} <= modules   # ds2 imports these
    assert {"numpy", "scipy", "numba"} <= import_path.with_dependencies({"librosa"})  # librosa's requirements
    assert "ds2" not in modules and "envcheck" not in modules


def test_a_pth_file_that_puts_a_folder_first_is_named(tmp_path):
    # A venv of our own, so that its site-packages can hold a .pth file; json.py shadows the standard library's.
    python = bare_venv(tmp_path / "venv")
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    (tmp_path / "front").mkdir()
    (tmp_path / "front" / "json.py").write_text("")
    (site / "front.pth").write_text(f"import sys; sys.path.insert(0, {str(tmp_path / 'front')!r})\n")
    run = run_envcheck("--only", "import.path", "--python", python)
    shadow = run.probe("import.path")["details"]["shadowed"][0]
    assert shadow["module"] == "json" and shadow["via"] == str(site / "front.pth")
    assert "the standard library's json" in run.probe("import.path")["summary"]
    assert f"Delete the line naming {tmp_path / 'front'} from {site / 'front.pth'}" in \
        run.diagnosis("import.path", "module-shadowed")["fix"][0]


def test_a_real_installation_on_pythonpath_is_not_a_shadow(tmp_path):
    # pip install --target, or a module system that sets PYTHONPATH: the package with its metadata, in an
    # environment that has no numpy of its own.
    python = bare_venv(tmp_path / "venv")
    write_dist(tmp_path / "target", "numpy", "1.20.0", files=["numpy/__init__.py"])
    write_package(tmp_path / "target", "numpy", "__version__ = '1.20.0'\n")
    run = run_envcheck("--only", "import.path", "--python", python, pythonpath=[tmp_path / "target"])
    assert run.probe("import.path")["status"] == "pass", run.probe("import.path")["summary"]


def test_a_stray_file_where_the_environment_has_no_such_module_is_a_fail(tmp_path):
    python = bare_venv(tmp_path / "venv")
    (tmp_path / "numpy.py").write_text(NUMPY_STUB)
    run = run_envcheck("--only", "import.path", "--python", python, cwd=tmp_path)
    shadow = run.probe("import.path")["details"]["shadowed"][0]
    assert shadow["module"] == "numpy" and shadow["hides"] is None
    assert "is not an installed package" in run.probe("import.path")["summary"]
    assert "install the real one" in run.diagnosis("import.path", "module-shadowed")["fix"][0]


def test_envcheck_itself_is_not_broken_by_the_files_it_reports(tmp_path):
    # envcheck's own process reads JSON rules and a YAML config; json.py and yaml.py in the working
    # directory would replace those modules for it too if it searched there first.
    (tmp_path / "json.py").write_text("raise SystemExit('the wrong json')\n")
    (tmp_path / "yaml.py").write_text("raise SystemExit('the wrong yaml')\n")
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 1\n")
    run = run_envcheck("--only", "import.path", "--config", str(config), cwd=tmp_path)
    assert run.report is not None, run.stderr
    assert {s["module"] for s in run.probe("import.path")["details"]["shadowed"]} == {"json", "yaml"}


def test_a_config_that_a_stray_yaml_keeps_envcheck_from_reading_names_it(tmp_path):
    # envcheck's own interpreter has no PyYAML; the yaml it finds on PYTHONPATH is a leftover that raises.
    python = bare_venv(tmp_path / "venv")
    write_package(tmp_path / "site", "yaml", 'raise ImportError("a stale yaml")\n')
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 1\n")
    run = run_envcheck("--config", str(config), python=python, pythonpath=[tmp_path / "site"], as_json=False)
    assert run.code == 1
    line, = run.stderr.strip().splitlines()
    assert f"yaml: {tmp_path / 'site' / 'yaml'} on PYTHONPATH is not an installed package" in line
    assert f"Take {tmp_path / 'site'} off PYTHONPATH" in line


def test_where_a_module_comes_from_in_this_process(tmp_path, monkeypatch):
    (tmp_path / "tqdm.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = shadows.find("tqdm")
    assert found is not None and found.file == str(tmp_path / "tqdm.py") and found.hides
    assert shadows.find("sys") is None          # built in: nothing on sys.path can replace it
    assert shadows.find("ds2") is None          # the project itself, in a checkout
    assert shadows.find("no_such_module_anywhere") is None
    assert shadows.in_environment(sys.modules["json"].__file__)
    assert not shadows.in_environment(str(tmp_path / "tqdm.py"))
