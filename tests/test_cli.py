import subprocess
import sys

import scott_distill
from scott_distill.cli import SUBCOMMANDS, main


def test_version_exposed():
    assert scott_distill.__version__.count(".") == 2


def test_cli_help_and_version(capsys):
    out = subprocess.run([sys.executable, "-m", "scott_distill.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and scott_distill.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "scott_distill.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: scott-distill" in out.stdout
    for name in SUBCOMMANDS:
        assert name in out.stdout


def test_every_subcommand_has_help(capsys):
    for name in SUBCOMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert "usage:" in capsys.readouterr().out
