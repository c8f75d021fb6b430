"""Every file ds2 writes goes through ds2.files: a writer that bypasses it fails here.

The scan reads the syntax of ds2/ and envcheck/report.py and lists every call that creates, replaces
or appends to a file by other means (open for writing, Path.write_text / write_bytes, numpy's save,
savefig, json.dump, MindSpore's save_checkpoint and export, soundfile.write, os.replace / rename,
shutil's copies and moves, tempfile). ALLOWED names the few that stay outside, each with its reason;
an allowed entry that no longer matches anything fails too, so the list cannot rot.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCANNED = sorted(REPO.glob("ds2/**/*.py")) + [REPO / "envcheck" / "report.py"]

WRITING_ATTRIBUTES = {"write_text", "write_bytes", "savefig", "save_checkpoint", "savez", "savez_compressed",
                      "mkstemp", "mkdtemp", "NamedTemporaryFile", "copyfile", "copy", "copy2", "copytree", "move"}
WRITING_MODULE_CALLS = {("os", "replace"), ("os", "rename"), ("np", "save"), ("numpy", "save"),
                        ("json", "dump"), ("soundfile", "write"), ("sf", "write"), ("ms", "export"),
                        ("mindspore", "export")}

# (file, function, call) -> why it may write without ds2.files.
ALLOWED = {
    ("ds2/files.py", "*", "*"): "the one module that writes",
    ("ds2/lm.py", "_open_text", "open"): "opens for the mode it is given; its one writing caller, write_arpa, "
                                         "writes into files.write_with's staging folder",
    ("ds2/export.py", "export_mindir", "ms.export"): "MindSpore writes the graph into files.staging's folder; "
                                                     "publish moves it into place with files.publish_file",
    ("ds2/export.py", "refuse_onnx", "tempfile.mkdtemp"): "a throw-away folder outside the project's files, removed "
                                                          "at once: only to see whether MindSpore can export ONNX",
    ("ds2/export.py", "refuse_onnx", "ms.export"): "into that throw-away folder",
    ("ds2/data/librispeech.py", "download", "open"): "a resumable download appends to its .part file, renamed "
                                                     "into place only once its MD5 matches",
    ("ds2/data/librispeech.py", "download", "os.replace"): "the checked download takes its name",
    ("ds2/data/librispeech.py", "reject", "os.replace"): "a damaged archive is moved aside, not written",
    ("ds2/data/librispeech.py", "prepare_subset", "os.replace"): "an extracted subset folder, whole, takes its "
                                                                 "place in one rename",
    ("ds2/checkpoint/storage.py", "save", "ms.save_checkpoint"): "MindSpore writes the file into files.staging's "
                                                                 "folder; files.publish_file moves it into place",
    ("ds2/data/synth.py", "render", "tempfile.mkstemp"): "espeak-ng's WAV output, inside the staging folder "
                                                          "that is renamed into place whole",
    ("ds2/data/synth.py", "render", "soundfile.write"): "into the staging folder that is renamed into place "
                                                         "whole",
    ("ds2/data/synth.py", "build_corpus", "write_text"): "into the staging folder that is renamed into place "
                                                         "whole",
    ("ds2/data/synth.py", "build_corpus", "os.replace"): "the finished staging folder takes the corpus's name",
    ("ds2/lm_decode.py", "*", "tempfile.TemporaryFile"): "an anonymous scratch file, gone when closed",
}


def call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name):
            return f"{func.value.id}.{func.attr}"
        return func.attr
    return ""


def opens_for_writing(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return False
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return any(c in mode.value for c in "wax+")
    return True  # a mode chosen at run time may be a writing one


def in_memory_buffers(tree: ast.AST) -> set:
    """Names assigned an io.BytesIO() or io.StringIO(): writing into them writes no file."""
    return {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            and call_name(node.value) in ("io.BytesIO", "io.StringIO")
            for target in node.targets if isinstance(target, ast.Name)}


def writes(call: ast.Call, buffers: frozenset = frozenset()) -> bool:
    name = call_name(call)
    if name.startswith(("files.", "copy.")):
        return False
    if call.args and isinstance(call.args[0], ast.Name) and call.args[0].id in buffers:
        return False
    if name in ("open", "gzip.open", "io.open", "os.open", "os.fdopen"):
        return opens_for_writing(call) if name != "os.open" else True
    module, _, attribute = name.rpartition(".")
    return (module, attribute) in WRITING_MODULE_CALLS or attribute in WRITING_ATTRIBUTES or \
        name in WRITING_ATTRIBUTES or name.split(".")[-1] in {"mkstemp", "mkdtemp", "TemporaryFile"}


def direct_writes():
    """(file, enclosing function, call name, line) of every writing call outside ds2.files."""
    found = []
    for path in SCANNED:
        relative = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        buffers = frozenset(in_memory_buffers(tree))

        def visit(node, function):
            for child in ast.iter_child_nodes(node):
                inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
                if isinstance(child, ast.Call) and writes(child, buffers):
                    found.append((relative, function, call_name(child), child.lineno))
                visit(child, inner)
        visit(tree, "")
    return found


def allowed_by(relative, function, name):
    for key in ((relative, "*", "*"), (relative, function, name), (relative, "*", name),
                (relative, function, name.rpartition(".")[2])):
        if key in ALLOWED:
            return key
    return None


def test_every_writer_goes_through_ds2_files():
    bypassing = [f"{path}:{line} {function or '<module>'}: {name}"
                 for path, function, name, line in direct_writes() if allowed_by(path, function, name) is None]
    assert bypassing == [], "write through ds2.files (or add an ALLOWED entry with its reason):\n" + "\n".join(bypassing)


def test_every_allowed_entry_still_matches_a_writer():
    used = {allowed_by(path, function, name) for path, function, name, _ in direct_writes()}
    assert set(ALLOWED) - used == set()


def test_the_scan_finds_a_writer_that_bypasses_ds2_files(tmp_path):
    sample = ast.parse('def f(p, data):\n    with open(p, "w") as out:\n        out.write(data)\n'
                       '    p.write_text(data)\n    np.save(p, data)\n    fig.savefig(p)\n    os.replace(p, p)\n'
                       '    memory = io.BytesIO()\n    np.save(memory, data)\n    files.write_bytes(p, memory.getvalue())\n')
    buffers = frozenset(in_memory_buffers(sample))
    names = sorted(call_name(call) for call in ast.walk(sample) if isinstance(call, ast.Call) and writes(call, buffers))
    assert names == sorted(["open", "p.write_text", "np.save", "fig.savefig", "os.replace"])
