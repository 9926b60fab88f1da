"""The conda env files pin exactly what pyproject.toml pins (conda itself is not available here)."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        match = PIN.match(req.strip())
        assert match, f"not an exact pin: {req!r}"
        out[match.group(1).lower()] = match.group(2)
    return out


def test_pipeline_env_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = pins(project["dependencies"])
    env = yaml.safe_load((REPO / "envs" / "pipeline.yaml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = pins([r for r in pip_section if not r.startswith("--")])
    # jobs run inside the env; snakemake itself (the scheduler) is not needed there
    assert have == {k: v for k, v in wanted.items() if k != "snakemake"}
    assert wanted["torch"] == "2.13.0"
