"""Contracts on the code's shape, kept by CI like any other test.

- Layers (import-linter, configured in pyproject.toml): `domain` imports nothing of ours,
  `projections` never imports `api`.
- Types (mypy, configured in pyproject.toml): the packages listed in TYPED are clean. The
  list grows as each layer is brought to zero errors; it only ever gets longer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPED = ["domain"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_the_layers_import_only_downwards() -> None:
    result = run(str(Path(sys.executable).parent / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_typed_packages_have_no_type_errors() -> None:
    result = run(sys.executable, "-m", "mypy", *TYPED)
    assert result.returncode == 0, result.stdout + result.stderr
