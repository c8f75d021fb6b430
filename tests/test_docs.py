"""The documentation describes the project as it is, and is not part of the images.

- No file of the repository speaks of how the project was developed (development rounds, issue
  numbers) or names folders of the machine it was developed on (the checkout's own absolute path,
  scratch folders, home folders).
- Every link and every repository path that README.md and docs/*.md name resolves inside the
  repository (anchors included), every `make TARGET` they name is a target of the Makefile, and
  every `ds2 COMMAND` is in ds2/__main__.py's COMMANDS.
- Editing README.md or anything under docs/ (other than what the Dockerfiles copy) leaves the
  images' inputs digest unchanged, so it never rebuilds an image.

The checks read the real Makefile, COMMANDS and Dockerfiles, so a new target, command or image
input needs no edit here. They run on the host (`make test-docs`, part of `make test`) and in
`make test-fast`; the image itself holds neither the README nor the docs, so there they skip.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

pytestmark = pytest.mark.skipif(
    not (REPO / "README.md").is_file() or not (REPO / "Makefile").is_file(),
    reason="needs the checkout: the image holds neither the README nor the Makefile (make test runs "
           "these checks on the host)")


# ---------------------------------------------------------------------------------------------
# Which files: the repository's own

# Folders that hold outputs, caches and local environments, never the project's files; left out
# when the tree is walked because git cannot list it (a checkout mounted into a container).
NOT_THE_PROJECTS = {".git", "runs", "__pycache__", ".pytest_cache", "build", "dist", ".cache"}


def repository_files(root: Path) -> List[Path]:
    """The files git tracks under root, or, without a usable git, every file outside the folders
    that hold outputs and local environments."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True, timeout=60).stdout
        names = sorted({name for name in listed.decode().split("\0") if name})
        if names:
            return [root / name for name in names if (root / name).is_file()]
    except (OSError, subprocess.SubprocessError):
        pass
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_THE_PROJECTS and not d.startswith(".venv")
                   and not d.endswith(".egg-info")]
        found += [Path(folder) / name for name in files if name not in NOT_THE_PROJECTS]   # a worktree's .git file
    return sorted(found)


def read_text(path: Path):
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def doc_files(root: Path) -> List[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


# ---------------------------------------------------------------------------------------------
# The project speaks of itself only

# /tmp paths that the images and scripts themselves create (the image build's inputs, the entrypoint's
# home folders, the base-image bootstrap); any other /tmp path is somebody's scratch folder.
OWN_TMP_NAMES = ("extra-ca", "requirements.lock", "ca-bundle.pem", "pip.log", "sources-no-security.list",
                 "home-", "ds2-base", "ds2-native-src")

SELF_TALK: List[Tuple[str, str]] = [
    (r"\b(?:stop|round)s? \d+\b", "names a development round"),
    (r"\b(?:this|that|last|next|previous|earlier|latest) (?:stop|round)\b", "names a development round"),
    (r"\bissues? #?\d+", "names an issue number"),
    (r"(?<![\w.])\.\./shared\b", "points outside the repository (../shared)"),
    (r"/work/(?:main|wt|scratch|shared|brief|\.[a-z])", "names a folder of the development machine"),
    (r"/root/|/home/[a-z]|/Users/[A-Za-z]", "names a home folder"),
    (r"/tmp/(?!(?:" + "|".join(re.escape(n) for n in OWN_TMP_NAMES) + r"))[\w.-]", "names a scratch folder"),
]


def self_talk(root: Path) -> List[str]:
    """'path:line: what' for every line of the repository's files that speaks of how the project was
    made instead of what it is. The checkout's own absolute path counts as a machine folder too,
    unless it is where the images put the project (make test-fast mounts the checkout there)."""
    checkout = str(root.resolve())
    images = " ".join(d.read_text() for d in root.glob("Dockerfile.*"))
    own_path = re.compile(re.escape(checkout) + r"(?![\w.-])")
    patterns = [] if own_path.search(images) else [(own_path, "names the checkout's absolute path")]
    patterns += [(re.compile(p, re.IGNORECASE), why) for p, why in SELF_TALK]
    problems = []
    for path in repository_files(root):
        if path.resolve() == THIS_FILE:   # it spells the patterns and plants violations on purpose
            continue
        text = read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, why in patterns:
                found = pattern.search(line)
                if found:   # one problem per line is enough to find it
                    problems.append(f"{path.relative_to(root)}:{number}: {why}: {found.group(0)!r}")
                    break
    return problems


# ---------------------------------------------------------------------------------------------
# What the docs name exists

FENCE = re.compile(r"^(```|~~~)")


def split_markdown(text: str) -> Tuple[List[str], List[str]]:
    """(prose lines, code lines): the lines inside fenced blocks, and the rest."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def code_fragments(text: str) -> List[str]:
    """The code a page shows: inline `code` spans of the prose and the lines of fenced blocks,
    with shell comments removed (a comment is prose)."""
    prose, code = split_markdown(text)
    spans = re.findall(r"`([^`\n]+)`", "\n".join(prose))
    lines = [re.sub(r"(^|\s)#.*$", "", line) for line in code]
    return spans + lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    text = path.read_text()
    prose, _ = split_markdown(text)
    found: Set[str] = set()
    seen: Dict[str, int] = {}
    for line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<(?:a|img)\s[^>]*(?:href|src)=\"([^\"]+)\"")


def links(text: str) -> Iterator[str]:
    prose, _ = split_markdown(text)
    for match in LINK.finditer("\n".join(prose)):
        yield match.group(1) or match.group(2)


def inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def broken_links(root: Path) -> List[str]:
    """'page: link: why' for every relative link of the docs that does not resolve inside root."""
    problems = []
    for page in doc_files(root):
        if not page.is_file():
            continue
        for target in links(page.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            where, _, anchor = target.partition("#")
            path = (page.parent / where) if where else page
            name = f"{page.relative_to(root)}: {target}"
            if not inside(root, path):
                problems.append(f"{name}: points outside the repository")
            elif not path.exists():
                problems.append(f"{name}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                problems.append(f"{name}: no such anchor in {path.resolve().relative_to(root.resolve())}")
    return problems


# A path into the repository: a top-level folder of the project followed by a path, or a top-level
# file. Paths inside containers (/opt/ds2/...) and run outputs (runs/...) are not the repository's.
TOP_FOLDERS = ("ds2", "envcheck", "bench", "tests", "docker", "docs", ".ci")
REPO_PATH = re.compile(r"(?<![\w./$~-])((?:" + "|".join(re.escape(t) for t in TOP_FOLDERS) + r")/[\w.*/-]*)")
TOP_FILES = re.compile(r"(?<![\w./-])(Dockerfile\.\w+|compose\.yaml|pyproject\.toml|\.dockerignore)(?![\w-])")


def missing_paths(root: Path) -> List[str]:
    """'page: path' for every repository path the docs name that does not exist (a glob must match)."""
    problems = []
    for page in doc_files(root):
        if not page.is_file():
            continue
        text = page.read_text()
        named = {m.rstrip(".,;:") for m in REPO_PATH.findall(text)} | set(TOP_FILES.findall(text))
        for name in sorted(named):
            exists = any(root.glob(name)) if "*" in name else (root / name).exists()
            if not exists:
                problems.append(f"{page.relative_to(root)}: {name}")
    return problems


DOCS_NAMED = re.compile(r"(?<![\w./-])docs/[\w./-]*\w")


def docs_named_elsewhere(root: Path) -> List[str]:
    """'file: docs/...' for every docs path that code, tests or configuration name and that does not exist."""
    problems = []
    for path in repository_files(root):
        if path.resolve() == THIS_FILE or path.parent == root / "docs" or path == root / "README.md":
            continue
        text = read_text(path)
        for name in sorted(set(DOCS_NAMED.findall(text or ""))):
            if not (root / name).exists():
                problems.append(f"{path.relative_to(root)}: {name}")
    return problems


def makefile_targets(root: Path) -> Set[str]:
    targets = set()
    for line in (root / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.%-][A-Za-z0-9_.% -]*?)\s*:(?!=)", line)
        if rule and not line.startswith("\t"):
            targets.update(t for t in rule.group(1).split() if not t.startswith("."))
    return targets


# `make [options] [VAR=value ...] TARGET` and `[python -m] ds2 COMMAND` in the code the docs show.
MAKE = re.compile(r"(?<![\w-])make(?:\s+(?:-[oCfWj]\s*\S+|-\S+|[A-Z_][A-Z0-9_]*=(?:\"[^\"]*\"|'[^']*'|\S*)))*"
                  r"\s+(?P<name>[a-z][\w.-]*)")
DS2 = re.compile(r"(?<![\w/.:-])(?:python3? -m )?ds2 (?P<name>[a-z][\w-]*)")


def unknown_names(root: Path, pattern: re.Pattern, known: Set[str], what: str) -> List[str]:
    """'page: WHAT NAME' for every name `pattern` finds in the docs' code that is not in `known`."""
    problems = set()
    for page in doc_files(root):
        if page.is_file():
            for fragment in code_fragments(page.read_text()):
                problems.update(f"{page.relative_to(root)}: {what} {m.group('name')}"
                                for m in pattern.finditer(fragment) if m.group("name") not in known)
    return sorted(problems)


def unknown_make_targets(root: Path) -> List[str]:
    return unknown_names(root, MAKE, makefile_targets(root), "make")


def ds2_commands(root: Path) -> Set[str]:
    """The keys of COMMANDS in ds2/__main__.py, read without importing ds2."""
    tree = ast.parse((root / "ds2" / "__main__.py").read_text())
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets) and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    raise AssertionError("ds2/__main__.py has no COMMANDS = {...}: the docs check reads the command names there")


def unknown_ds2_commands(root: Path) -> List[str]:
    return unknown_names(root, DS2, ds2_commands(root), "ds2")


def unreachable_pages(root: Path) -> List[str]:
    """docs/*.md pages that no link chain from README.md reaches."""
    reached, todo = set(), [root / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached or not page.is_file():
            continue
        reached.add(page)
        for target in links(page.read_text()):
            where = target.partition("#")[0]
            if where.endswith(".md") and not re.match(r"^[a-z][a-z0-9+.-]*:", where):
                todo.append((page.parent / where).resolve())
    return [str(p.relative_to(root)) for p in sorted((root / "docs").glob("**/*.md"))
            if p.resolve() not in reached]


# ---------------------------------------------------------------------------------------------
# The repository as it is

CHECKS = {
    "the repository speaks of itself only": self_talk,
    "every link of the docs resolves inside the repository": broken_links,
    "every repository path the docs name exists": missing_paths,
    "every docs page the code names exists": docs_named_elsewhere,
    "every make target the docs name exists": unknown_make_targets,
    "every ds2 command the docs name exists": unknown_ds2_commands,
    "every docs page is reachable from the README": unreachable_pages,
}


@pytest.mark.parametrize("check", CHECKS, ids=list(CHECKS))
def test_the_repository_as_it_is(check):
    assert CHECKS[check](REPO) == []


def test_readme_is_a_guide_of_at_most_400_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 400


# ---------------------------------------------------------------------------------------------
# The checks find what they are for (a planted violation of each)

MAKEFILE = "all: ## x\n\techo\ntrain-cpu eval: image-cpu\n\techo\nimage-cpu:\n\techo\nX := 1\n"
MAIN = 'COMMANDS = {\n    "train": ("ds2.train", "train"),\n    "eval": ("ds2.evaluate", "eval"),\n}\n'


def planted(tmp_path: Path, readme: str, pages: Dict[str, str] = None, files: Dict[str, str] = None) -> Path:
    root = tmp_path / "checkout"
    (root / "docs").mkdir(parents=True)
    (root / "ds2").mkdir()
    (root / "README.md").write_text(readme)
    (root / "Makefile").write_text(MAKEFILE)
    (root / "ds2" / "__main__.py").write_text(MAIN)
    for name, text in {**(pages or {}), **(files or {})}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_self_talk_finds_rounds_issues_and_machine_paths(tmp_path):
    root = planted(tmp_path, "# ds2\n", files={
        "docs/a.md": "Measured at stop 19.\nAs this round showed.\nSee issue 13.\nClean line.\n",
        "ds2/b.py": "# from ../shared/docs/FINDINGS.md\nPATH = '/work/wt/guide/x'\n",
        "bench/c.sh": "cd /tmp/ci-clone\ncp /tmp/extra-ca/x .\nls /root/.pyenv\n"})
    (root / "docs" / "d.md").write_text(f"cloned into {root}/x\n")
    assert self_talk(root) == [
        "bench/c.sh:1: names a scratch folder: '/tmp/c'",
        "bench/c.sh:3: names a home folder: '/root/'",
        "docs/a.md:1: names a development round: 'stop 19'",
        "docs/a.md:2: names a development round: 'this round'",
        "docs/a.md:3: names an issue number: 'issue 13'",
        f"docs/d.md:1: names the checkout's absolute path: '{root.resolve()}'",
        "ds2/b.py:1: points outside the repository (../shared): '../shared'",
        "ds2/b.py:2: names a folder of the development machine: '/work/wt'",
    ]


def test_link_check_finds_missing_files_anchors_and_links_outside(tmp_path):
    root = planted(tmp_path, "[a](docs/a.md) [b](docs/a.md#results) [c](docs/a.md#nope) [d](docs/gone.md)\n"
                             "[e](../shared/docs/FINDINGS.md) [f](https://example.org/x) [g](#ds2)\n\n# ds2\n",
                   pages={"docs/a.md": "## Results\n\n| <a id=\"row-1\"></a>1 |\n[back](../README.md#ds2) [r](#row-1) [x](#row-2)\n"})
    assert sorted(broken_links(root)) == [
        "README.md: ../shared/docs/FINDINGS.md: points outside the repository",
        "README.md: docs/a.md#nope: no such anchor in docs/a.md",
        "README.md: docs/gone.md: no such file",
        "docs/a.md: #row-2: no such anchor in docs/a.md",
    ]


def test_anchors_follow_github_headings_and_skip_code_blocks(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# envcheck: diagnosis before every stage\n## The whole job: `make train-cpu`\n"
                    "## Tests\n## Tests\n```\n# not a heading\n```\n")
    assert anchors(page) == {"envcheck-diagnosis-before-every-stage", "the-whole-job-make-train-cpu",
                             "tests", "tests-1"}


def test_path_check_finds_paths_that_do_not_exist(tmp_path):
    root = planted(tmp_path, "See `ds2/config.py`, `ds2/gone.py`, `envcheck/rules/*.json` and Dockerfile.cpu.\n"
                             "Not ours: /opt/ds2/bench/x.py, runs/small/curves.png.\n",
                   files={"ds2/config.py": "", "envcheck/rules/a.json": "{}"})
    assert missing_paths(root) == ["README.md: Dockerfile.cpu", "README.md: ds2/gone.py"]


def test_docs_named_in_code_must_exist(tmp_path):
    root = planted(tmp_path, "# ds2\n", pages={"docs/performance.md": "x\n"},
                   files={"ds2/a.py": "# figures: docs/performance.md, docs/speed.md.\n"})
    assert docs_named_elsewhere(root) == ["ds2/a.py: docs/speed.md"]


def test_make_target_check_reads_the_makefile(tmp_path):
    root = planted(tmp_path, "`make train-cpu`, `make SET=\"a=1 b=2\" eval`, `make -o image-cpu all`\n\n"
                             "```\nmake train-cpu   # make a corpus\nmake serve-everything\n```\n"
                             "In prose, make sure nothing counts; `make` alone neither.\n")
    assert unknown_make_targets(root) == ["README.md: make serve-everything"]


def test_ds2_command_check_reads_the_commands(tmp_path):
    root = planted(tmp_path, "`ds2 train`, `python -m ds2 eval`, `ds2-stage train ds2 train`, `ds2:cpu`\n\n"
                             "```\nds2 export --to onnx\nds2 --help   # ds2 never imports envcheck\n```\n")
    assert unknown_ds2_commands(root) == ["README.md: ds2 export"]


def test_pages_no_link_reaches_are_found(tmp_path):
    root = planted(tmp_path, "[a](docs/a.md)\n", pages={"docs/a.md": "[b](b.md)\n", "docs/b.md": "x\n",
                                                        "docs/orphan.md": "x\n"})
    assert unreachable_pages(root) == ["docs/orphan.md"]


# ---------------------------------------------------------------------------------------------
# Docs are not image inputs

def inputs_digest(checkout: Path, flavor: str) -> str:
    result = subprocess.run(["bash", str(checkout / "docker" / "build-image.sh"), flavor, "--inputs-digest",
                             "sha256:" + "0" * 64], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_editing_the_readme_or_docs_leaves_the_image_inputs_unchanged(tmp_path, flavor):
    copy = tmp_path / "checkout"
    shutil.copytree(REPO, copy, symlinks=True,
                    ignore=shutil.ignore_patterns(*NOT_THE_PROJECTS, ".venv*", "*.egg-info"))
    before = inputs_digest(copy, flavor)
    with open(copy / "README.md", "a") as f:
        f.write("\nA new paragraph.\n")
    dockerfile = (copy / f"Dockerfile.{flavor}").read_text()
    for page in (copy / "docs").glob("**/*"):
        if page.is_file() and f"docs/{page.relative_to(copy / 'docs')}" not in dockerfile:
            with open(page, "ab") as f:
                f.write(b"\n")
    (copy / "docs" / "new-page.md").write_text("# A new page\n")
    assert inputs_digest(copy, flavor) == before

    with open(copy / "ds2" / "__init__.py", "a") as f:   # and the digest does see a code change
        f.write("# a code change\n")
    assert inputs_digest(copy, flavor) != before
