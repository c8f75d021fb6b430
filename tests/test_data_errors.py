"""DataError, the one error of every reader: one line naming the file, the place and the fix, and in every
ds2 command one line on stderr and exit status 1."""
import importlib

import pytest

from ds2.__main__ import COMMANDS, build_parser, main
from ds2.errors import DataError, UserError

# Positional arguments each command needs before its run() is reached.
POSITIONALS = {"manifest": ["to-csv", "in.json", "out.csv"], "transcribe": ["audio.wav"], "convert": ["source.pth"]}


def test_message_is_one_line_with_file_place_problem_and_fix():
    error = DataError("runs/data/manifests/train.json", "not valid JSON:\n  Expecting value", "run ds2 preprocess again",
                      place="line 3,\ncolumn 7")
    assert str(error) == ("runs/data/manifests/train.json (line 3, column 7): not valid JSON: Expecting value; "
                          "run ds2 preprocess again")
    assert isinstance(error, UserError) and (error.path, error.place) == ("runs/data/manifests/train.json",
                                                                          "line 3, column 7")


def test_a_library_message_is_cut_to_a_readable_length():
    error = DataError("model.arpa", "x" * 10_000, "fix it")
    assert len(str(error)) < 400 and str(error).endswith("...; fix it")


def test_every_command_is_in_the_sweep():
    parser = build_parser()
    for command in COMMANDS:
        parser.parse_args([command] + POSITIONALS.get(command, []))   # argparse exits if one is missing


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_turns_a_data_error_into_one_line_and_exit_1(command, monkeypatch, capsys, tmp_path):
    """Whatever a command reads, a DataError that reaches the entry point is one line, never a traceback."""
    def unreadable(cfg, args):
        raise DataError(tmp_path / "bad\nname.json", "a problem\nover two lines", "the fix", place="line 2")

    monkeypatch.setattr(importlib.import_module(COMMANDS[command][0]), "run", unreadable)
    assert main([command, "--set", f"run_dir={tmp_path}"] + POSITIONALS.get(command, [])) == 1
    error = capsys.readouterr().err
    assert error == f"ds2 {command}: {tmp_path}/bad name.json (line 2): a problem over two lines; the fix\n"
