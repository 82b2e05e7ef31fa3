"""Helpers for the robustness tests: run the real CLI in-process and read what a user would see."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]

    def one_line_error(self, after_log: bool = False) -> str:
        """Assert exit code 2 and a one-line ``error: ...`` message (no traceback); return that line.

        Args:
            after_log: the command may have logged progress to stderr first (``vision3d run``
                logs each stage there); the error must still be one line, the last one.
        """
        assert self.code == 2, f"exit code {self.code}, stderr:\n{self.err}"
        assert "Traceback" not in self.err, self.err
        errors = [ln for ln in self.err_lines if ln.startswith("error: ")]
        assert len(errors) == 1 and self.err_lines[-1] == errors[0], f"expected one error line, got:\n{self.err}"
        if not after_log:
            assert len(self.err_lines) == 1, f"expected only the error line on stderr, got:\n{self.err}"
        return errors[0]


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: run ``vision3d.cli.main(argv)`` in this process; returns a :class:`CliResult`."""
    from vision3d.cli import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 1
        c = capsys.readouterr()
        return CliResult(code, c.out, c.err)

    return run


@pytest.fixture(autouse=True)
def _one_thread():
    # Shared 2-core CI machines: one torch thread avoids oversubscription stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def toy_plugin(monkeypatch):
    """The pipeline tests' toy stages (tests/pipeline/toy_stages.py), registered in this process."""
    monkeypatch.setenv("VISION3D_PLUGINS", "tests.pipeline.toy_stages")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import tests.pipeline.toy_stages  # noqa: F401


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
