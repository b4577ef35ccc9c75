import subprocess
import sys

import scott_distill
from scott_distill.commands import COMMANDS, main

NO_TORCH = "import sys; {code}; heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules); print(heavy)"


def test_version_exposed():
    assert scott_distill.__version__.count(".") == 2


def test_cli_help_and_version(capsys):
    out = subprocess.run([sys.executable, "-m", "scott_distill", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and scott_distill.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "scott_distill", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: scott-distill" in out.stdout
    for name in COMMANDS:
        assert name in out.stdout


def test_every_subcommand_has_help(capsys):
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert "usage:" in capsys.readouterr().out


def _heavy_modules_after(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(code=code)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_import_and_version_and_help_load_no_torch():
    """`import scott_distill`, `scott-distill --version` and `--help` answer without torch, transformers, trl or
    datasets (PEP 562 lazy exports; the dispatcher imports a command's module only when it runs)."""
    assert _heavy_modules_after("import scott_distill; scott_distill.__version__; dir(scott_distill)") == "[]"
    for flag in ("--version", "--help"):
        code = (f"from scott_distill.commands import main\ntry:\n    main([{flag!r}])\nexcept SystemExit:\n    pass")
        assert _heavy_modules_after(code) == "[]", flag


def test_lazy_exports_resolve_to_their_modules():
    for name in scott_distill.__all__:
        assert getattr(scott_distill, name) is not None, name
    assert scott_distill.RationaleStudent.__module__ == "scott_distill.student.model"
    assert set(scott_distill.__all__) == {"__version__", *scott_distill._EXPORTS} and set(scott_distill.__all__) <= set(
        dir(scott_distill))


def test_console_script_entry_point_loads_the_dispatcher():
    """The installed `scott-distill` script's target exists (it pointed at a module the layout change removed)."""
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "scott-distill"]
    assert script.load() is main


def _fake_command(monkeypatch, body):
    """Register ``scott-distill fake`` whose ``main`` runs ``body`` (the dispatcher imports commands by name)."""
    import types

    module = types.ModuleType("scott_distill.commands.fake")
    module.main = lambda argv: body()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(COMMANDS, "fake", "a test command")


def test_dispatcher_leaves_the_process_group_it_ran_in(monkeypatch, tmp_path):
    """Regression (CI at 3462e54): a torchrun rank that ended with its gloo group still alive aborted at
    interpreter shutdown ("terminate called without an active exception", SIGABRT) after its work was
    done, and torchrun failed the job. A command that created the group destroys it after a normal end; after an
    error or a stop on a signal (`RunInterrupted`) it leaves it (a peer may wait in a collective, and an NCCL
    teardown could then hang); a group that existed before the command is the caller's and is left alone."""
    import pytest
    import torch.distributed as dist

    from scott_distill import RunInterrupted

    stores = iter(range(100))

    def init():
        store = dist.FileStore(str(tmp_path / f"store{next(stores)}"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)

    def fail():
        init()
        raise ValueError("boom")

    def interrupted():
        init()
        raise RunInterrupted(15, "stopped by SIGTERM", checkpoint=None)

    try:
        _fake_command(monkeypatch, lambda: init() or 0)
        assert main(["fake"]) == 0
        assert not dist.is_initialized()

        _fake_command(monkeypatch, interrupted)
        assert main(["fake"]) == 143
        assert dist.is_initialized()
        dist.destroy_process_group()

        _fake_command(monkeypatch, fail)
        with pytest.raises(ValueError, match="boom"):
            main(["fake"])
        assert dist.is_initialized()
        dist.destroy_process_group()

        init()  # the caller's group
        _fake_command(monkeypatch, lambda: 0)
        assert main(["fake"]) == 0
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
