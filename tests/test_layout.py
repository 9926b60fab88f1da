"""The code's shape: rules -> one thin rule script per rule -> library, in one direction; small modules and classes;
a workflow that parses where only Snakemake is installed."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import REPO, TEST_CONFIG, planned_jobs

SCRIPTS = REPO / "workflow_scripts"
LIB = SCRIPTS / "lib"
RULE_SCRIPTS = sorted(p for p in SCRIPTS.glob("*.py") if p.name != "__init__.py")
LIBRARY = sorted(p for p in LIB.glob("*.py") if p.name != "__init__.py")
SNAKEMAKE_PIN = "snakemake==9.27.1"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported (not those imported inside its functions)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def rule_scripts_used() -> dict[str, str]:
    """rule name -> the script its ``script:`` directive runs."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    used = {}
    for block in re.split(r"^rule ", text, flags=re.M)[1:]:
        name = block.split(":", 1)[0].strip()
        script = re.search(r"script:\s*\n\s*\"\.\./workflow_scripts/([\w/]+\.py)\"", block)
        if script:
            used[name] = script.group(1)
    return used


def test_every_rule_runs_its_own_script_named_after_it() -> None:
    used = rule_scripts_used()
    assert used, "no script: rules found"
    for rule, script in used.items():
        assert script == f"{rule}.py", f"rule {rule} runs {script}"
    assert sorted(used.values()) == [p.name for p in RULE_SCRIPTS], "every rule script belongs to exactly one rule"


@pytest.mark.parametrize("script", RULE_SCRIPTS, ids=lambda p: p.name)
def test_rule_scripts_are_thin_leaves(script: Path) -> None:
    text = script.read_text()
    assert len(text.splitlines()) <= 80, f"{script.name}: {len(text.splitlines())} lines (at most 80)"
    rule_modules = {f"workflow_scripts.{p.stem}" for p in RULE_SCRIPTS}
    assert not imported_modules(script) & rule_modules, f"{script.name} imports another rule script"
    assert ".rule" not in text, f"{script.name} chooses behaviour by rule name"
    assert "run_snakemake_job(snakemake, _snakemake)" in text


@pytest.mark.parametrize("module", LIBRARY, ids=lambda p: p.name)
def test_library_modules_are_small_and_never_import_rule_scripts(module: Path) -> None:
    n_lines = len(module.read_text().splitlines())
    assert n_lines <= 400, f"{module.name}: {n_lines} lines (at most 400)"
    for name in imported_modules(module):
        assert not name.startswith("workflow_scripts.") or name.startswith("workflow_scripts.lib"), name
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= 150, f"{module.name}: class {node.name} has {length} lines (at most 150)"


PARSE_TIME = {f"workflow_scripts.lib.{m}" for m in ("paths", "config", "hub", "inputs")}


def test_parse_time_imports_are_what_snakemake_has() -> None:
    """rules/common.smk imports workflow_scripts.lib.{paths,config,hub,inputs} at parse time: they may use only the
    standard library and Snakemake's own dependencies."""
    allowed = set(sys.stdlib_module_names) | {"__future__", "snakemake", "yaml", "jsonschema"}
    for module in PARSE_TIME:
        for name in module_level_imports(REPO / (module.replace(".", "/") + ".py")):
            assert name.split(".")[0] in allowed or name in PARSE_TIME, name
    smk = "\n".join(p.read_text() for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))])
    for name in re.findall(r"^\s*(?:from|import)\s+([\w.]+)", smk, flags=re.M):
        assert name.split(".")[0] in allowed or name in PARSE_TIME, name


@pytest.fixture(scope="module")
def bare_snakemake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding only Snakemake (what `--use-conda` users run the workflow from)."""
    env = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", SNAKEMAKE_PIN], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return python


def test_workflow_parses_with_only_snakemake_installed(bare_snakemake: Path, tmp_path: Path) -> None:
    probe = subprocess.run([str(bare_snakemake), "-c", "import numpy"], capture_output=True, text=True)
    assert probe.returncode != 0, "the bare environment must not have numpy, or this test proves nothing"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for configfile in (REPO / "config.yaml", TEST_CONFIG):
        proc = subprocess.run(
            [str(bare_snakemake), "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--configfile",
             str(configfile), "--directory", str(tmp_path), "--cores", "1"],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # the whole DAG was planned, down to the first stage and up to the target (a parse that stops early plans none)
        jobs = planned_jobs(proc.stdout)
        assert jobs.get("all") == 1 and jobs.get("prepare_data") == 1 and jobs.get("table1") == 1, jobs


def test_ci_runs_readme_command_2_verbatim() -> None:
    """.ci/run is the README's test command, character for character (no hidden steps, the same Python)."""
    blocks = re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)
    install_and_run, install_and_test = blocks[0], blocks[1]
    assert install_and_run.startswith("python3.11 -m venv") and install_and_test.endswith("python -m pytest")
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == install_and_test, ci[-1]


def test_no_library_module_imports_one_that_imports_it_back() -> None:
    """The library's import graph (imports at any depth, lazy ones inside functions included) has no cycle."""
    names = {f"workflow_scripts.lib.{p.stem}" for p in LIBRARY}
    graph = {
        f"workflow_scripts.lib.{p.stem}": {n for n in imported_modules(p) if n in names}
        - {f"workflow_scripts.lib.{p.stem}"}
        for p in LIBRARY
    }

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, " ; ".join(" -> ".join(m.rsplit(".", 1)[1] for m in c) for c in cycles)
