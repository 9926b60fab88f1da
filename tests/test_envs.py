"""The conda env files pin exactly what pyproject.toml pins and take torch from the right wheel index (conda itself is
not available here)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[\w,]+\])?==([^\s;]+)$")  # name[extras]==version
INDEX = re.compile(r"^--(?:extra-)?index-url\s+(\S+)$")
# env file -> the torch build it must install (the PyTorch wheel index of that build)
ENVS = {
    "pipeline.yaml": re.compile(r"^https://download\.pytorch\.org/whl/cpu/?$"),
    "pipeline-cuda.yaml": re.compile(r"^https://download\.pytorch\.org/whl/cu\d{3}/?$"),
}


def pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        match = PIN.match(req.strip())
        assert match, f"not an exact pin: {req!r}"
        out[match.group(1).lower()] = match.group(2)
    return out


def pip_section(name: str) -> tuple[dict, list[str]]:
    env = yaml.safe_load((REPO / "envs" / name).read_text())
    return env, next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


@pytest.mark.parametrize("name", sorted(ENVS))
def test_env_pins_exactly_what_pyproject_pins(name: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = pins(project["dependencies"])
    env, pip = pip_section(name)
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    assert [d for d in env["dependencies"] if not isinstance(d, dict)] == ["python=3.11", "pip"]  # nothing from conda
    have = pins([r for r in pip if not r.startswith("--")])
    # jobs run inside the env; snakemake itself (the scheduler) is not needed there
    assert have == {k: v for k, v in wanted.items() if k != "snakemake"}
    assert wanted["torch"] == "2.13.0"


@pytest.mark.parametrize("name", sorted(ENVS))
def test_env_takes_torch_from_its_build_index(name: str) -> None:
    _, pip = pip_section(name)
    options = [r.strip() for r in pip if r.strip().startswith("--")]
    indexes = [m.group(1) for m in map(INDEX.match, options) if m]
    assert len(indexes) == len(options) == 1, options  # one wheel index, no other pip option
    assert ENVS[name].match(indexes[0]), f"{name}: torch from {indexes[0]}"


def test_cpu_and_cuda_envs_differ_only_in_the_torch_index_and_name() -> None:
    cpu, cpu_pip = pip_section("pipeline.yaml")
    cuda, cuda_pip = pip_section("pipeline-cuda.yaml")
    assert cpu["name"] != cuda["name"]
    assert cpu["channels"] == cuda["channels"]
    assert [r for r in cpu_pip if not r.startswith("--")] == [r for r in cuda_pip if not r.startswith("--")]


def test_snakemake_is_pinned_with_its_report_extra() -> None:
    """`snakemake --report` needs pygments, which only the `reports` extra guarantees."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "snakemake[reports]==9.27.1" in project["dependencies"]
