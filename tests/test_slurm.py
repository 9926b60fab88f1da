"""The `.test` pipeline on a real SLURM cluster (tests/slurm/cluster.py) through profiles/slurm and the real executor
plugin: same Table 1 as the local run, every job where the profile sends it, and a scancelled RLHF job resumed.

Site values are given the way a user gives them: a site profile (tests/slurm/site-profile: status command, poll
interval) with `--profile`, beside `--workflow-profile profiles/slurm`; Snakemake merges the two per top-level key.
Only test controls are on the command line (`--verbose` for the sbatch lines, `--retries 0` for the interrupted run).

One pipeline run covers all checks: run 1 is interrupted (RLHF cancelled with scancel once its first resume
checkpoint exists), run 2 finishes the pipeline. Every Snakemake call is bounded by `timeout`. Without root, apt or a
working slurmd the cluster tests are skipped with the reason; the unit tests of the thread choice always run.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, TEST_CONFIG
from workflow_scripts.lib.job import snakemake_threads

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
from cluster import PHYSICAL_CPUS, Cluster, ClusterUnavailable, start_cluster  # noqa: E402

SITE_PROFILE = REPO / "tests" / "slurm" / "site-profile"
WORKFLOW_PROFILE = REPO / "profiles" / "slurm"
PROFILE = yaml.safe_load((WORKFLOW_PROFILE / "config.yaml").read_text())
MODEL_RULES = (
    "sft", "rlhf", "irl_rlhf", "demonstrations", "irl_features", "irl_train", "irl_log_ratio", "evaluate",
    "rlhf_seed", "irl_rlhf_seed"
)  # fmt: skip
CPU_RULES = ("prepare_data", "base_model")
TIMING_COLUMNS = ["rollout_seconds", "update_seconds", "rollout_tokens_per_s", "update_samples_per_s", "tokens_per_s"]
RUN_TIMEOUT = 900  # seconds per Snakemake call; without it a status-query hang would stall CI (ASSETS: sacct hang)
TABLES = ("table1.csv", "table1_differences.csv", "table1_claims.csv")


# ------------------------------------------------------------------ unit tests: torch threads inside a SLURM job
def _job(threads: int, **resources) -> SimpleNamespace:
    return SimpleNamespace(threads=threads, resources=SimpleNamespace(**resources))


@pytest.fixture()
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})


def test_threads_outside_slurm_are_the_rules(two_cpus: None) -> None:
    assert snakemake_threads(_job(2, cpus_per_gpu=8)) == 2
    assert snakemake_threads(SimpleNamespace(threads=None)) == 1


def test_threads_in_a_slurm_job_follow_the_cpus_it_got(two_cpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "8")
    assert snakemake_threads(_job(2, cpus_per_gpu=8)) == 2  # SLURM does not bind here: 2 CPUs usable, not 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert snakemake_threads(_job(2, cpus_per_gpu=8)) == 8  # bound to its 8 CPUs: 8 threads, not the rule's 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert snakemake_threads(_job(2, cpus_per_gpu=8)) == 8  # unbound on a 64-CPU node: the allocation
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert snakemake_threads(_job(1, cpus_per_task=4)) == 4  # the step's CPUs per task before the node's count


def test_threads_of_local_snakemake_inside_an_allocation_stay_the_rules(
    two_cpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sbatch --wrap 'snakemake --cores 16'`: jobs without a SLURM CPU request share the allocation."""
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert snakemake_threads(_job(2, mem_mb=1000)) == 2


# ------------------------------------------------------------------ the cluster and one interrupted + resumed run
@pytest.fixture(scope="module")
def slurm_cluster() -> Cluster:
    # munged runs as user munge: its socket must sit in a directory it can reach (pytest's tmp dirs are 0700)
    state = Path(tempfile.mkdtemp(prefix="irl-slurm-", dir="/tmp"))
    try:
        cluster = start_cluster(state)
    except ClusterUnavailable as e:
        shutil.rmtree(state, ignore_errors=True)
        pytest.skip(f"no SLURM test cluster here: {e}")
    yield cluster
    cluster.stop()
    shutil.rmtree(state, ignore_errors=True)


def snakemake_slurm(workdir: Path, *args: str) -> list[str]:
    """The command of conftest's ``snakemake`` with the site and workflow profiles, bounded by ``timeout``."""
    return [
        "timeout", "-k", "30", str(RUN_TIMEOUT), *SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory",
        str(workdir), "--configfile", str(TEST_CONFIG), "--profile", str(SITE_PROFILE), "--workflow-profile",
        str(WORKFLOW_PROFILE), "--verbose", *args,
    ]  # fmt: skip


def run_logged(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def finish(proc: subprocess.Popen, log: Path) -> int:
    rc = proc.wait(timeout=RUN_TIMEOUT + 60)
    assert rc != 124, f"Snakemake hung and was stopped after {RUN_TIMEOUT} s:\n{log.read_text()[-3000:]}"
    return rc


# --- stopping RLHF right after its first checkpoint. The .test RLHF runs 3 iterations in ~0.2 s, far too fast to
# catch by polling: the job's Python process is found while it imports (seconds), the checkpoint directory is watched
# with inotify, and the process is stopped (SIGSTOP) the moment last.pt is renamed into place; then scancel.
IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80


def rlhf_process(workdir: Path) -> tuple[int, str] | None:
    """PID and SLURM job id of the Python process running the rlhf rule's script (`.snakemake/scripts/tmp*.rlhf.py`;
    not irl_rlhf's, not a shell wrapping it, not rule rlhf_seed's: the first seed's, whose job runs in a SLURM job
    with comment rule_rlhf) in ``workdir``."""
    script = re.compile(rb"\S*/\.snakemake/scripts/tmp\w+\.rlhf\.py")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        proc = Path("/proc") / pid
        try:
            if not any(script.fullmatch(a) for a in (proc / "cmdline").read_bytes().split(b"\0")):
                continue
            if "python" not in Path(os.readlink(proc / "exe")).name or Path(os.readlink(proc / "cwd")) != workdir:
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        job = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"SLURM_JOB_ID=")]
        if job and [rule_of(j) for j in scontrol_jobs() if j.get("JobId") == job[0]] != ["rlhf"]:
            continue  # another seed's run (rule rlhf_seed) of the same script
        return int(pid), (job or [""])[0]
    return None


@dataclass
class Interruption:
    job: str = ""
    checkpoint_when_stopped: bool = False
    model_when_stopped: bool = False
    scancel: str = ""


def interrupt_rlhf_after_first_checkpoint(workdir: Path, snakemake: subprocess.Popen) -> Interruption:
    found = Interruption()
    process = None
    while process is None:
        if snakemake.poll() is not None:
            return found  # the run ended before RLHF started: the caller reports the log
        process = rlhf_process(workdir)
        time.sleep(0.2)  # the script imports for seconds before its first checkpoint
    pid, found.job = process
    assert found.job, f"the rlhf script (PID {pid}) runs outside a SLURM job"
    # made now, before the first checkpoint, so that the watch below sees last.pt arrive (PPO makes it anyway)
    ckpt_dir = workdir / "results" / "rlhf" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, bytes(ckpt_dir), IN_MOVED_TO | IN_CLOSE_WRITE) >= 0
    try:
        deadline = time.monotonic() + 300
        while not (ckpt_dir / "last.pt").exists() and time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                break
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready and any(name == b"last.pt" for name in _inotify_names(os.read(fd, 65536))):
                break
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
    found.checkpoint_when_stopped = (ckpt_dir / "last.pt").exists()
    found.model_when_stopped = (workdir / "results" / "rlhf" / "model").exists()
    proc = subprocess.run(["scancel", found.job], capture_output=True, text=True, timeout=60)
    found.scancel = f"rc={proc.returncode} {proc.stderr.strip()}"
    return found


def _inotify_names(data: bytes) -> list[bytes]:
    names, off = [], 0
    while off < len(data):
        _, _, _, length = struct.unpack_from("iIII", data, off)
        names.append(data[off + 16 : off + 16 + length].rstrip(b"\0"))
        off += 16 + length
    return names


def scontrol_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still holds (MinJobAge=3600: finished ones too), as {field: value}."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=60, check=True)
    return [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in out.stdout.splitlines() if line.strip()]


def rule_of(job: dict[str, str]) -> str:
    """The plugin's --comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    return re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", job.get("Comment", "")).group(1)


@dataclass
class SlurmRun:
    workdir: Path
    interruption: Interruption
    first_rc: int
    first_log: str
    second_log: str
    seconds: dict[str, float] = field(default_factory=dict)
    jobs: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> SlurmRun:
    workdir = tmp_path_factory.mktemp("slurm_pipeline").resolve()
    logs = tmp_path_factory.mktemp("slurm_logs")
    t0 = time.monotonic()
    # run 1: `--retries 0` so that the cancelled job ends this Snakemake (the profile's retries: 1 would resubmit it
    # at once, which resumes the same way); the rerun below is what a user does after a scancel or a lost session
    first = run_logged(snakemake_slurm(workdir, "--retries", "0"), logs / "run1.log")
    interruption = interrupt_rlhf_after_first_checkpoint(workdir, first)
    first_rc = finish(first, logs / "run1.log")
    t1 = time.monotonic()
    second_log = logs / "run2.log"
    rc = finish(run_logged(snakemake_slurm(workdir), second_log), second_log)
    if rc != 0 and "LockException" in second_log.read_text():
        subprocess.run(snakemake_slurm(workdir, "--unlock"), capture_output=True, timeout=RUN_TIMEOUT)
        rc = finish(run_logged(snakemake_slurm(workdir), second_log), second_log)
    t2 = time.monotonic()
    assert rc == 0, f"the rerun failed ({rc}):\n{second_log.read_text()[-5000:]}"
    run = SlurmRun(
        workdir, interruption, first_rc, (logs / "run1.log").read_text(), second_log.read_text(),
        {"interrupted run": t1 - t0, "rerun": t2 - t1, "total": t2 - t0}, scontrol_jobs(),
    )  # fmt: skip
    print(f"\nSLURM test run: {', '.join(f'{k} {v:.0f} s' for k, v in run.seconds.items())}; {len(run.jobs)} jobs")
    for rule in ("prepare_data", "rlhf", "irl_train"):  # what the plugin submitted (up to its --wrap)
        pattern = rf"sbatch call: (sbatch .*--comment rule_{rule}(?:_wildcards_\S*)? .*?) --wrap"
        line = re.search(pattern, run.first_log + run.second_log)
        print(f"  {rule}: {line.group(1) if line else '(not found)'}")
    return run


# ------------------------------------------------------------------ the checks
def test_slurm_run_completes_with_the_local_table1(slurm_run: SlurmRun, pipeline_run: Path) -> None:
    for name in TABLES:
        ours, local = slurm_run.workdir / "reports" / name, pipeline_run / "reports" / name
        # exact: the same computation (same machine, the same 2 torch threads: see the thread check below)
        assert ours.read_bytes() == local.read_bytes(), f"reports/{name} differs from the local --cores 2 run"


def test_every_job_went_where_the_profile_sends_it(slurm_run: SlurmRun) -> None:
    """Read back from slurmctld: partition, GPUs and CPUs of every submitted job; model rules as GPU jobs."""
    wanted = PROFILE["set-resources"]
    seen: dict[str, int] = {}
    for job in slurm_run.jobs:
        rule = rule_of(job)
        seen[rule] = seen.get(rule, 0) + 1
        res, where = wanted[rule], f"job {job['JobId']} ({rule})"
        assert job["Partition"] == res["slurm_partition"], where
        if rule in MODEL_RULES:
            assert res["slurm_partition"] == "gpu" and "cpus_per_task" not in res, rule
            cpus = res["cpus_per_gpu"]
            assert job.get("TresPerJob") == "gres:gpu:1", where
            assert job.get("CpusPerTres") == f"gres:gpu:{cpus}", where
        else:
            cpus = res["cpus_per_task"]
            assert "gpu" not in job.get("TresPerJob", "") + job.get("CpusPerTres", ""), where
        assert int(job["NumCPUs"]) == cpus, where
    assert set(seen) == set(MODEL_RULES) | set(CPU_RULES), f"submitted: {seen}"  # table/figure rules ran locally
    # irl_train (3 objectives x 2 seeds + the ceiling in .test) went out as job arrays: the ceiling as soon as the
    # features exist, the six IRL runs together once irl_log_ratio has oriented their pairs (.test: log_ratio labels)
    arrays = {job.get("ArrayJobId", job["JobId"]) for job in slurm_run.jobs if rule_of(job) == "irl_train"}
    assert len(arrays) <= 2 and seen["irl_train"] == 7, (arrays, seen)
    # the job's torch used the CPUs it got, capped by the CPUs the (pinned) slurmd can run on
    usable = min(PHYSICAL_CPUS, len(os.sched_getaffinity(0)))
    rlhf_log = (slurm_run.workdir / "logs" / "rlhf.log").read_text()
    assert f"cpus_per_gpu={wanted['rlhf']['cpus_per_gpu']}" in rlhf_log
    assert f"-> torch threads {min(usable, wanted['rlhf']['cpus_per_gpu'])} " in rlhf_log


def test_scancelled_rlhf_resumes_to_the_uninterrupted_result(slurm_run: SlurmRun, pipeline_run: Path) -> None:
    stop = slurm_run.interruption
    assert stop.job, f"RLHF never started in the first run:\n{slurm_run.first_log[-4000:]}"
    assert stop.checkpoint_when_stopped and not stop.model_when_stopped, stop
    assert slurm_run.first_rc != 0, "the first run should have failed on the cancelled job"
    state = {job["JobId"]: job["JobState"] for job in slurm_run.jobs}
    assert state[stop.job] == "CANCELLED", (stop, state)
    log = (slurm_run.workdir / "logs" / "rlhf.log").read_text()
    resumed = re.search(r"resumed from \S+ at iteration (\d+)", log)
    assert resumed and 1 <= int(resumed.group(1)) < 3, log  # 3 iterations in .test: resumed mid-way
    ours, local = (pd.read_parquet(d / "results/rlhf/train_log.parquet") for d in (slurm_run.workdir, pipeline_run))
    pd.testing.assert_frame_equal(ours.drop(columns=TIMING_COLUMNS), local.drop(columns=TIMING_COLUMNS))
    model = "results/rlhf/model/model.safetensors"
    assert (slurm_run.workdir / model).read_bytes() == (pipeline_run / model).read_bytes()


def test_a_partition_the_cluster_lacks_stops_the_run_before_any_sbatch(slurm_cluster: Cluster, tmp_path: Path) -> None:
    """A new user who has not set the site's partition names gets one message naming them, and nothing is queued."""
    profile = tmp_path / "profile"
    profile.mkdir()
    text = (WORKFLOW_PROFILE / "config.yaml").read_text()
    (profile / "config.yaml").write_text(text.replace("&gpu_partition gpu", "&gpu_partition a100"))
    cmd = snakemake_slurm(tmp_path / "run", "--retries", "0")
    cmd[cmd.index(str(WORKFLOW_PROFILE))] = str(profile)
    before = {job.get("JobId") for job in scontrol_jobs()}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "SLURM partition(s) not on this cluster" in out and "slurm_partition=a100 (rules" in out, out[-3000:]
    assert "this cluster has: cpu, gpu" in out
    assert {job.get("JobId") for job in scontrol_jobs()} == before  # no job was submitted
