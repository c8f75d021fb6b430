"""The knowledge base: every rule file is valid, every rule is tested, and matching works as documented."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import List, Set

import pytest

from envcheck import diagnose
from envcheck.result import ProbeResult

TESTS = Path(__file__).resolve().parent


def result(probe_id="import.mindspore", status="fail", output="", findings=(), details=None):
    return ProbeResult(probe_id, "title", status, "summary", dict(details or {}), 0.1, list(findings), output)


def test_rule_files_are_valid_and_ids_unique():
    rules = diagnose.load_rules()
    assert len(rules) >= 40
    assert len({r["id"] for r in rules}) == len(rules)


def _strings(node) -> Set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _checks(node) -> List[ast.AST]:
    """The assert statements and the Run.diagnosis(probe, rule) calls (which fail when the rule did not fire)."""
    return [n for n in ast.walk(node) if isinstance(n, ast.Assert) or
            (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "diagnosis")]


def asserted_strings(source: str) -> Set[str]:
    """Strings a test file checks: inside an assert or a diagnosis() call, or given by a parametrize
    decorator to a test argument that an assert or a diagnosis() call uses."""
    tree = ast.parse(source)
    found = set()
    for check in _checks(tree):
        found |= _strings(check)
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        used = {n.id for check in _checks(function) for n in ast.walk(check) if isinstance(n, ast.Name)}
        for decorator in function.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize":
                names = {name.strip() for name in decorator.args[0].value.split(",")}
                if names & used:
                    found |= _strings(decorator.args[1])
    return found


def test_every_rule_has_a_test_that_asserts_it_fired():
    asserted = set()
    for path in TESTS.glob("test_envcheck*.py"):
        asserted |= asserted_strings(path.read_text())
    untested = sorted(r["id"] for r in diagnose.load_rules() if r["id"] not in asserted)
    assert untested == []


def test_the_rule_test_check_tells_an_assertion_from_a_mention():
    source = (
        'NOTE = "mentioned-only"\n'
        'def test_a(run):\n    assert "asserted-rule" in run.rules("p")\n'
        'def test_b(run):\n    run.diagnosis("p", "diagnosed-rule")\n'
        '@pytest.mark.parametrize("rule_id", ["param-rule"])\ndef test_c(run, rule_id):\n    assert rule_id in x\n'
        '@pytest.mark.parametrize("other", ["unused-param"])\ndef test_d(run, other):\n    print("printed-rule")\n')
    assert asserted_strings(source) >= {"asserted-rule", "diagnosed-rule", "param-rule", "p"}
    assert not asserted_strings(source) & {"mentioned-only", "unused-param", "printed-rule"}


@pytest.mark.parametrize("broken, message", [
    ({"title": "t", "probes": ["*"], "evidence": [{"finding": "x"}], "explanation": "e", "fix": []}, "missing"),
    ({"id": "r", "title": "t", "probes": ["*"], "evidence": [{"output": "("}], "explanation": "e", "fix": []},
     "bad regex"),
    ({"id": "r", "title": "t", "probes": ["*"], "evidence": [{"smell": "x"}], "explanation": "e", "fix": []},
     "unknown condition"),
    ({"id": "r", "title": "t", "probes": ["*"], "evidence": [{"dist": "numpy", "<": "one"}], "explanation": "e",
      "fix": []}, "not a version"),
    ({"id": "r", "title": "t", "probes": ["*"], "evidence": [{"finding": "x"}], "explanation": "e", "fix": [],
      "severity": "fatal"}, "severity"),
    ({"id": "r", "title": "t", "probes": ["*"], "evidence": [{"finding": "x"}], "explanation": "e", "fix": "cmd"},
     "fix must be a list"),
])
def test_malformed_rules_are_rejected(broken, message):
    with pytest.raises(diagnose.RuleError, match=message):
        diagnose.validate(broken, "test")


def test_rules_without_severity_only_explain_problems():
    rule = {"id": "r", "title": "t", "probes": ["import.*"], "evidence": [{"output": "boom"}],
            "explanation": "e", "fix": ["f"]}
    passing, failing = result(status="pass", output="boom"), result(status="fail", output="boom")
    diagnose.diagnose([passing, failing], [rule])
    assert passing.diagnosis == [] and passing.status == "pass"
    assert [d.rule_id for d in failing.diagnosis] == ["r"]


def test_rules_with_severity_raise_a_passing_result_from_installed_versions():
    rule = {"id": "r", "title": "{dist:numpy} is too new", "probes": ["distributions"], "severity": "fail",
            "evidence": [{"dist": "numpy", ">=": "2"}], "explanation": "e", "fix": ["f"]}
    dists = result("distributions", status="pass", details={"installed": {"numpy": "2.0.2"}})
    diagnose.diagnose([dists], [rule])
    assert dists.status == "fail" and dists.diagnosis[0].title == "2.0.2 is too new"
    # The line's words agree with its status: it does not read "FAIL ... every requirement is met" alone.
    assert dists.summary == "summary; but: 2.0.2 is too new"


def test_a_rule_that_does_not_raise_the_status_leaves_the_summary():
    rule = {"id": "r", "title": "known", "probes": ["*"], "severity": "warn", "evidence": [{"output": "boom"}],
            "explanation": "e", "fix": ["f"]}
    failing = result(status="fail", output="boom")
    diagnose.diagnose([failing], [rule])
    assert (failing.status, failing.summary, [d.rule_id for d in failing.diagnosis]) == ("fail", "summary", ["r"])


def test_placeholders_from_details_and_regex_groups_leave_commands_alone():
    rule = {"id": "r", "title": "{module} wants 0x{want}", "probes": ["*"],
            "evidence": [{"output": "want 0x(?P<want>[0-9a-f]+)"}],
            "explanation": "imported after {imported}; {unknown} stays",
            "fix": ["python -c 'import glob; print({\"a\": 1})'"]}
    r = result(output="want 0xf", details={"module": "scipy", "imported": ["numpy", "torch"]})
    diagnose.diagnose([r], [rule])
    d = r.diagnosis[0]
    assert d.title == "scipy wants 0xf"
    assert d.explanation == "imported after numpy, torch; {unknown} stays"
    assert d.fix == ["python -c 'import glob; print({\"a\": 1})'"]


def test_a_fix_step_that_is_a_list_placeholder_becomes_one_step_per_item():
    rule = {"id": "r", "title": "t", "probes": ["*"], "evidence": [{"output": "boom"}], "explanation": "e",
            "fix": ["{fixes}", "then: {fixes}", "{module}"]}
    r = result(output="boom", details={"fixes": ["rename a.py", "unset PYTHONPATH"], "module": "numpy"})
    diagnose.diagnose([r], [rule])
    assert r.diagnosis[0].fix == ["rename a.py", "unset PYTHONPATH", "then: rename a.py, unset PYTHONPATH", "numpy"]


def test_checkpoint_shape_messages():
    # MindSpore before 2.7 raises this from Parameter.set_data when a training-state checkpoint written
    # by another version is loaded; MindSpore 2.7.2 accepts the shape change silently, so the message
    # cannot be produced with the pinned version: it is fed here as the older releases print it.
    rules = diagnose.load_rules()
    old_mindspore = result("mindspore.train_step", output=(
        "ValueError: Can not change the shape of Parameter which has been initialized. "
        "Current shape is (), and incoming is (1,)."))
    ds2_loader = result("checkpoint.load", output="ValueError: beta1_power: checkpoint shape (1,), model shape ()")
    diagnose.diagnose([old_mindspore, ds2_loader], rules)
    for r in (old_mindspore, ds2_loader):
        d = next(d for d in r.diagnosis if d.rule_id == "checkpoint-adam-power-shape")
        assert d.title.endswith("(1,) instead of ()")
        assert "weights only" in " ".join(d.fix)


def test_training_step_that_does_not_train():
    r = result("mindspore.train_step", findings=["train-params-unchanged"])
    diagnose.diagnose([r], diagnose.load_rules())
    assert [d.rule_id for d in r.diagnosis] == ["mindspore-train-step-broken"]
