"""Static checks that run with the suite: lint, types and the layer contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"


def test_ruff_lint() -> None:
    _run(str(BIN / "ruff"), "check", "src", "tests", "bench")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", "src", "tests", "bench")


def test_mypy_strict() -> None:
    _run(str(BIN / "mypy"))


def test_layer_contract() -> None:
    _run(str(BIN / "lint-imports"))
