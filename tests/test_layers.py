"""The layering rules, checked on the source (imports read with `ast`, function-local ones included):

- ds2 never imports envcheck: ds2 must work (and fail) without it;
- no module imports a command module (the modules behind `ds2 X` and `python -m envcheck`) except the
  entry point that dispatches to it: what two commands share belongs in a plain module;
- envcheck's own process imports only ds2's plain modules (PLAIN_DS2 below), which need nothing beyond
  the standard library, so envcheck runs in the broken environment it diagnoses; its probes, which run
  in subprocesses of the interpreter under test (envcheck/child.py), may import any of ds2;
- no import cycles among the project's modules.

`layer_problems` checks a tree with a set of rules; the last tests build small packages that break each
rule and check that it says so. Plain Python and the standard library only: runs on the host and in
the images alike.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Set, Tuple

REPO = Path(__file__).resolve().parent.parent

# The ds2 modules envcheck's own process may import, directly or through one another: the configuration
# (config, and errors and text, which it uses), the model's shapes and the memory plan (shapes, memory,
# cgroup, and kernels: which kernels training runs on), and the one way to write a file (files, for the
# --json report). They need only the standard
# library (PyYAML for config files, imported when one is read).
PLAIN_DS2 = frozenset({"ds2", "ds2.config", "ds2.errors", "ds2.text", "ds2.shapes", "ds2.memory", "ds2.cgroup",
                       "ds2.files", "ds2.kernels"})


@dataclass(frozen=True)
class Rules:
    packages: Tuple[str, ...]         # the top-level packages (folders) whose modules are checked
    library: str                      # the package that must never import `diagnosis`
    diagnosis: str                    # the checking tool: its own process imports only `plain`
    plain: FrozenSet[str]             # the modules of `library` the diagnosis's own process may import
    child_process: Tuple[str, ...]    # modules of `diagnosis` that run in subprocesses (prefix `x.` = its submodules)
    commands: FrozenSet[str]          # command modules
    dispatchers: FrozenSet[str]       # the entry points allowed to import them


def command_table(main_file: Path) -> Dict[str, str]:
    """COMMANDS of a `python -m ds2` entry point, read without importing it: command -> module."""
    for node in ast.parse(main_file.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["COMMANDS"]:
            return {name: module for name, (module, _) in ast.literal_eval(node.value).items()}
    raise AssertionError(f"{main_file} has no COMMANDS table")


def project_rules(root: Path = REPO) -> Rules:
    return Rules(packages=("ds2", "envcheck", "bench"), library="ds2", diagnosis="envcheck", plain=PLAIN_DS2,
                 child_process=("envcheck.probes.", "envcheck.child"),
                 commands=frozenset(command_table(root / "ds2" / "__main__.py").values()) | {"envcheck.cli"},
                 dispatchers=frozenset({"ds2.__main__", "envcheck.__main__"}))


# ---------------------------------------------------------------------------------------------
# The import graph


def module_files(root: Path, packages: Tuple[str, ...]) -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages (a package is its __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules: Dict[str, Path]) -> str:
    """The project module `import name` loads (name itself, or the package holding it); "" outside the project."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def imported_modules(module: str, path: Path, modules: Dict[str, Path]) -> Iterator[Tuple[str, int]]:
    """(project module, line) for every import statement in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from package import name` imports the submodule package.name when there is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved and resolved != module:
                yield resolved, node.lineno


def import_graph(modules: Dict[str, Path]) -> Dict[str, Dict[str, int]]:
    """module -> {module it imports: the line of the first such import}."""
    graph = {}
    for module, path in modules.items():
        edges: Dict[str, int] = {}
        for target, line in imported_modules(module, path, modules):
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# ---------------------------------------------------------------------------------------------
# The rules


def layer_problems(root: Path, rules: Rules) -> List[str]:
    """One line per broken rule, naming the file and line of the import that breaks it."""
    modules = module_files(root, rules.packages)
    graph = import_graph(modules)

    def where(module: str, target: str) -> str:
        return f"{modules[module].relative_to(root)}:{graph[module][target]}"

    problems = []
    for module, edges in graph.items():
        for target in edges:
            if _in(module, rules.library) and _in(target, rules.diagnosis):
                problems.append(f"{where(module, target)}: {module} imports {target}: {rules.library} never imports "
                                f"{rules.diagnosis}")
            if target in rules.commands and module not in rules.dispatchers:
                problems.append(f"{where(module, target)}: {module} imports the command module {target}: move what "
                                f"it needs into a plain module")

    # envcheck's own process: its modules outside the child process, and everything they import, transitively
    def child(module: str) -> bool:
        return any(module.startswith(p) if p.endswith(".") else module == p for p in rules.child_process)

    reached = {m: [m] for m in graph if _in(m, rules.diagnosis) and not child(m)}   # module -> import chain
    queue = list(reached)
    while queue:
        module = queue.pop(0)
        for target in graph[module]:
            if target in reached or child(target):
                continue
            reached[target] = reached[module] + [target]
            if _in(target, rules.library) and target not in rules.plain:
                chain = reached[target]
                problems.append(f"{where(chain[-2], target)}: {rules.diagnosis}'s own process imports {target} "
                                f"({' -> '.join(chain)}), which is not one of {rules.library}'s plain modules "
                                f"({', '.join(sorted(rules.plain))})")
                continue
            queue.append(target)

    for component in cycles(graph):
        problems.append(f"import cycle: {' <-> '.join(component)}")
    return problems


# ---------------------------------------------------------------------------------------------
# The project


def test_the_project_keeps_its_layers():
    problems = layer_problems(REPO, project_rules())
    assert not problems, "\n".join(problems)


def test_the_rules_see_every_command_and_the_plain_modules_exist():
    rules = project_rules()
    modules = module_files(REPO, rules.packages)
    assert {"ds2.train", "ds2.evaluate", "ds2.serve", "ds2.convert", "envcheck.cli"} <= rules.commands
    assert rules.commands <= set(modules) and rules.plain <= set(modules)
    assert all(any(_in(module, package) for module in modules) for package in rules.packages)   # each was read


# ---------------------------------------------------------------------------------------------
# A tree that breaks each rule


def write_tree(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


FAKE_RULES = Rules(packages=("lib", "tool"), library="lib", diagnosis="tool", plain=frozenset({"lib", "lib.config"}),
                   child_process=("tool.probes.",), commands=frozenset({"lib.train", "lib.evaluate"}),
                   dispatchers=frozenset({"lib.__main__"}))

CLEAN = {
    "lib/__init__.py": "",
    "lib/__main__.py": "import importlib\nfrom lib import train, evaluate\n",
    "lib/config.py": "import json\n",
    "lib/model.py": "from lib.config import json\n",
    "lib/step.py": "from . import model\n",
    "lib/train.py": "from lib import step\nfrom lib.config import json\n",
    "lib/evaluate.py": "def run():\n    from lib.model import json\n",
    "tool/__init__.py": "",
    "tool/cli.py": "from lib.config import json\nfrom tool import runner\n",
    "tool/runner.py": "import lib\n",
    "tool/probes/__init__.py": "",
    "tool/probes/load.py": "def run():\n    from lib import step, model\n",    # runs in a child process
}


def test_a_clean_fake_tree_passes(tmp_path):
    write_tree(tmp_path, CLEAN)
    assert layer_problems(tmp_path, FAKE_RULES) == []


def test_each_broken_rule_is_reported_with_its_file_and_line(tmp_path):
    write_tree(tmp_path, dict(CLEAN, **{
        # the library imports the tool, inside a function
        "lib/model.py": "from lib.config import json\n\ndef check():\n    import tool.runner\n",
        # a command module imported by another module (relative import)
        "lib/step.py": "from . import model\nfrom .evaluate import run\n",
        # the tool's own process reaches a library module that is not plain, through another one
        "tool/runner.py": "import lib\nfrom lib import helper\n",
        "lib/helper.py": "import json\n",
        # a cycle through function-local imports
        "lib/a.py": "def f():\n    from lib import b\n",
        "lib/b.py": "def g():\n    import lib.a\n",
    }))
    problems = layer_problems(tmp_path, FAKE_RULES)
    expected = [
        "lib/model.py:4: lib.model imports tool.runner: lib never imports tool",
        "lib/step.py:2: lib.step imports the command module lib.evaluate",
        "tool/runner.py:2: tool's own process imports lib.helper (tool.runner -> lib.helper)",
        "import cycle: lib.a <-> lib.b",
    ]
    for line in expected:
        assert sum(problem.startswith(line) for problem in problems) == 1, (line, problems)
    assert len(problems) == len(expected), problems


def test_a_cycle_through_the_tool_and_a_non_plain_module_deeper_down_are_found(tmp_path):
    write_tree(tmp_path, dict(CLEAN, **{
        "lib/config.py": "import json\nfrom lib import model\n",       # a plain module that imports a heavy one
        "tool/cli.py": "from lib.config import json\nfrom tool import runner\n",
        "tool/runner.py": "import lib\nfrom tool.cli import main\n",   # cli <-> runner
    }))
    problems = layer_problems(tmp_path, FAKE_RULES)
    assert any(p.startswith("lib/config.py:2: tool's own process imports lib.model (tool.cli -> lib.config -> "
                            "lib.model)") for p in problems), problems
    assert "import cycle: tool.cli <-> tool.runner" in problems, problems
