"""The command line starts without torch or transformers, and Ctrl-C while it starts is one line and exit 130."""

from __future__ import annotations

import sys

import pytest
from tests_support import run_bounded

HEAVY = ("torch", "transformers", "accelerate")

IMPORTED_BY = """
import sys
from newcompute.cli.app import main
sys.argv = ["newcompute", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("HEAVY:", [name for name in {heavy!r} if name in sys.modules])
sys.exit(code)
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], "list-paradigms"),
        (["list-paradigms"], "optical"),
        (["train", "--help"], "--threads"),
        (["data-sources"], "builtin:"),
    ],
)
def test_help_and_list_paradigms_import_neither_torch_nor_transformers(args: list[str], expected: str) -> None:
    script = IMPORTED_BY.format(heavy=HEAVY)
    result = run_bounded([sys.executable, "-c", script, *args], limit_s=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY: []"


CTRL_C_ON_IMPORT = """
import os, signal, sys, time

WHEN = sys.argv[1]

class CtrlCOnImport:
    \"\"\"Sends SIGINT to this process the moment module WHEN starts to be imported.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == WHEN:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        return None

sys.meta_path.insert(0, CtrlCOnImport())
from newcompute.cli.app import main
sys.argv = ["newcompute", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(
    ("module", "args"),
    [("typer", ["--help"]), ("pydantic", ["list-paradigms"]), ("newcompute_mx", ["list-paradigms"])],
)
def test_ctrl_c_while_starting_prints_one_line_and_exits_130(module: str, args: list[str]) -> None:
    result = run_bounded([sys.executable, "-c", CTRL_C_ON_IMPORT, module, *args], limit_s=60)
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.strip() == "Interrupted (Ctrl-C).", result.stderr[-2000:]
    assert result.stdout == ""
