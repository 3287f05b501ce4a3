"""The layering rule and the code quality gates run as part of the test suite.

`lint-imports` checks the import-linter contracts declared in pyproject.toml (domain is pure, the API never touches
SQLAlchemy or the infrastructure, the infrastructure never reaches up into the API or the composition root);
`ruff` and `mypy` check the whole tree with the configuration in pyproject.toml.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TOOL_DIRECTORY = Path(sys.executable).parent
TOOL_TIMEOUT_SECONDS = 180


def _run_tool(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    executable = TOOL_DIRECTORY / name
    if not executable.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")}
    environment["NO_COLOR"] = "1"
    return subprocess.run(
        [str(executable), *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n"
        f"{result.stderr}"
    )


def test_import_contracts_hold() -> None:
    """api -> domain <- infrastructure; only the container and the CLI may import everything."""
    result = _run_tool("lint-imports", "--no-cache")
    _assert_clean(result)
    # The contracts must actually have been checked: at least the three layering contracts, none broken.
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", result.stdout)
    assert summary is not None, result.stdout
    assert int(summary[1]) >= 3, result.stdout
    assert int(summary[2]) == 0, result.stdout


def test_ruff_finds_nothing() -> None:
    _assert_clean(_run_tool("ruff", "check", "--no-cache", "ledger", "tests", "scripts"))


def test_mypy_strict_passes() -> None:
    _assert_clean(_run_tool("mypy"))
