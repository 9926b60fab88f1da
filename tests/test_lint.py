"""Static checks that are part of the test command: ruff on the Python code, Snakemake's linter on the workflow."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, TEST_CONFIG


def test_ruff_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(REPO)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_is_clean(tmp_path) -> None:
    for configfile in (REPO / "config.yaml", TEST_CONFIG):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--lint",
                "-s",
                str(REPO / "Snakefile"),
                "--configfile",
                str(configfile),
                "--directory",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "Congratulations, your workflow is in a good condition!" in out, out
