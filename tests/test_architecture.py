"""The import-layer contract in pyproject.toml ([tool.importlinter]), checked by lint-imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

REPO_ROOT = Path(__file__).parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def layers_contract_name() -> str:
    contracts = read_configuration(str(REPO_ROOT / "pyproject.toml"))["contracts_options"]
    (name,) = (contract["name"] for contract in contracts if contract["type"] == "layers")
    return name


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the ddpm_lightning in cwd (lint-imports puts cwd first on sys.path).

    --no-cache: no .import_linter_cache folder is left behind, and the graph takes well under a
    second to build. COLUMNS: wide enough that contract names are not wrapped in the report.
    """
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} not found: install the test extra (pip install -e '.[test]')")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_package_keeps_its_import_layers():
    result = lint_imports(REPO_ROOT)
    if result.returncode != 0:
        pytest.fail(f"lint-imports exited {result.returncode}:\n{result.stdout}{result.stderr}")


def test_layers_contract_catches_an_upward_import(tmp_path):
    shutil.copytree(
        REPO_ROOT / "ddpm_lightning",
        tmp_path / "ddpm_lightning",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    sampling = tmp_path / "ddpm_lightning" / "sampling" / "__init__.py"
    sampling.write_text(sampling.read_text() + "\nimport ddpm_lightning.models  # noqa: E402\n")

    result = lint_imports(tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ddpm_lightning.sampling is not allowed to import ddpm_lightning.models" in output
    assert f"{layers_contract_name()} BROKEN" in output
