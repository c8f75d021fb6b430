"""`python -m envcheck`, and the `envcheck` command a pip install makes: envcheck/cli.py, on envcheck's own
import path.

Both start with a sys.path where a file of the user's can replace a module envcheck imports: `python -m`
puts the working directory first, and PYTHONPATH comes before the standard library either way. A json.py or
yaml.py there is what envcheck reports (the import.path probe, which sees the path `python -m ds2` would
see), not what envcheck itself runs on. So envcheck's own process searches the standard library first, then
the directory envcheck is in (a checkout's ds2 before an installed one), then site-packages, then the rest,
and not the working directory.
"""
import os
import sys


def _own_import_path() -> None:
    from envcheck import syspath  # imports only os, sys and site, which the interpreter has already loaded

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = list(sys.path)
    if path and os.path.realpath(path[0] or os.curdir) == os.path.realpath(os.getcwd()):
        del path[0]
    sys.path[:] = syspath.environment_first(path, own=here)


def main() -> int:
    try:
        os.getcwd()
    except OSError as exc:  # the stage would not find its relative paths either: a blocking problem, exit 1
        sys.stderr.write(f"envcheck: the working directory is gone ({exc.strerror}): it was deleted or moved "
                         "after you changed into it; cd into a folder that exists and run it again\n")
        return 1
    _own_import_path()
    from envcheck import cli

    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
