"""A real one-node SLURM cluster on this machine, for tests: install, configure, start, stop.

Debian's ``slurm-wlm`` (22.05) and ``munge``, started as root without systemd: ``munged`` (on a private socket),
``slurmctld -D`` and ``slurmd -D`` run as children of the caller; their PIDs are recorded and exactly those PIDs are
stopped. No accounting daemon: job states come from ``squeue``/``scontrol`` (``MinJobAge`` keeps finished jobs for an
hour), which is what ``--slurm-status-command squeue`` needs. The node:

* partitions ``cpu`` (default) and ``gpu``; one GPU backed by ``/dev/null`` (Slurm 22.05 drops a GPU without a
  device file), so ``--gpus=1`` schedules and the job sees ``CUDA_VISIBLE_DEVICES=0`` (nothing is behind it);
* ``SlurmdParameters=config_overrides``: the node advertises ``NODE_CPUS`` CPUs and ``NODE_MEM_MB`` MB, more than the
  machine has, so a profile sized for GPU nodes (8 CPUs per GPU, 32 GB) is submitted unchanged. Nothing is enforced
  (``task/none``, no cgroups); ``slurmd`` is pinned to ``PHYSICAL_CPUS`` CPUs so every job sees the same CPU set
  whatever the host has;
* ``DefMemPerCPU`` so a job without ``--mem`` does not take the whole node.

Command line (root): ``python tests/slurm/cluster.py start DIR`` (prints the PIDs; daemons keep running),
``python tests/slurm/cluster.py stop DIR``. Tests use ``start_cluster`` / ``Cluster.stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol", "scancel")
CONF_DIR = Path("/etc/slurm")  # the plugin's inner `srun` drops SLURM_CONF from its environment: use the default path
MARKER = "# written by tests/slurm/cluster.py"
NODE_CPUS = 16
NODE_MEM_MB = 65536
PHYSICAL_CPUS = 2
DEF_MEM_PER_CPU = 1000
MIN_JOB_AGE = 3600  # seconds a finished job stays visible to squeue/scontrol (>= 3x the plugin's first poll)


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be set up here (not root, apt fails, a daemon dies); the message says why."""


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt if their programs are missing (``apt-get update`` first if needed)."""
    if all(shutil.which(p) for p in DAEMONS):
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("not root: cannot install slurm-wlm/munge with apt")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("no apt-get: install slurm-wlm and munge by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    proc = _run(cmd, env=env)
    if proc.returncode != 0:  # stale or missing package lists
        _run(["apt-get", "update"], env=env)
        proc = _run(cmd, env=env)
    if proc.returncode != 0 or not all(shutil.which(p) for p in DAEMONS):
        raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr.strip()[-500:]}")


def slurm_conf(state: Path, host: str) -> str:
    return f"""{MARKER} (state in {state}); removed again by Cluster.stop
ClusterName=irltest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={state}/munge/munge.socket
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU={DEF_MEM_PER_CPU}
MinJobAge={MIN_JOB_AGE}
KillWait=5
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket={NODE_CPUS} \
ThreadsPerCore=1 RealMemory={NODE_MEM_MB} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP
"""


def gres_conf(host: str) -> str:
    return f"{MARKER}\nNodeName={host} Name=gpu File=/dev/null\n"


def _ours(path: Path) -> bool:
    return not path.exists() or path.read_text().startswith(MARKER)


@dataclass
class Cluster:
    """A running test cluster: its state directory and the daemons it started (name -> PID)."""

    state: Path
    pids: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return socket.gethostname().split(".")[0]

    def _spawn(self, name: str, cmd: list[str], **kw) -> None:
        log = open(self.state / f"{name}.out", "w")  # noqa: SIM115 - the daemon keeps it open
        pin = set(sorted(os.sched_getaffinity(0))[:PHYSICAL_CPUS])
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed by the caller's Ctrl-C; stop() ends it
            preexec_fn=lambda: os.sched_setaffinity(0, pin),
            **kw,
        )
        self.procs[name] = proc
        self.pids[name] = proc.pid
        (self.state / "pids.json").write_text(json.dumps(self.pids, indent=1) + "\n")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                out = (self.state / f"{name}.out").read_text()[-800:]
                log = self.state / f"{name}.log"
                tail = log.read_text()[-800:] if log.exists() else ""
                raise ClusterUnavailable(f"{name} exited with {proc.returncode}: {out}{tail}")

    def start(self, timeout: float = 60) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("not root: slurmd must run as root here")
        for conf in (CONF_DIR / "slurm.conf", CONF_DIR / "gres.conf"):
            if not _ours(conf):
                raise ClusterUnavailable(f"{conf} exists and was not written by this script: not touching a real site")
        for sub in ("ctld", "spool"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        munge_dir = self.state / "munge"
        munge_dir.mkdir(exist_ok=True)
        shutil.chown(munge_dir, "munge", "munge")
        munge_dir.chmod(0o755)
        self.state.chmod(0o755)
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        (CONF_DIR / "slurm.conf").write_text(slurm_conf(self.state, self.host))
        (CONF_DIR / "gres.conf").write_text(gres_conf(self.host))
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            _run(["mungekey", "--create", f"--keyfile={key}"])
            shutil.chown(key, "munge", "munge")
            key.chmod(0o600)
        munged = [
            "munged", "--foreground", f"--socket={munge_dir}/munge.socket", f"--key-file={key}",
            f"--pid-file={munge_dir}/munged.pid", f"--log-file={munge_dir}/munged.log",
            f"--seed-file={munge_dir}/munged.seed",
        ]  # fmt: skip
        self._spawn("munged", munged, user="munge", group="munge")
        self._wait(lambda: (munge_dir / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i"])  # -c: fresh state; -i: ignore stale state
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.host])
        self._wait(self.node_idle, timeout, "the node to become idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.2)
        self._check_alive()
        logs = "".join(
            f"\n--- {p.name}\n{p.read_text()[-600:]}" for p in sorted(self.state.glob("*.log")) if p.is_file()
        )
        raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}{logs}")

    def node_idle(self) -> bool:
        proc = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10)
        states = proc.stdout.split()
        return proc.returncode == 0 and bool(states) and all(s.rstrip("*") in ("idle", "mixed") for s in states)

    def stop(self) -> None:
        """Cancel remaining jobs, then stop exactly the daemons this object started (TERM, then KILL)."""
        if "slurmctld" in self.pids:
            _run(["scancel", "--full", "--state=RUNNING"], timeout=30)
            _run(["scancel", "--state=PENDING"], timeout=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _run(["squeue", "-h", "-t", "R,CG"], timeout=10).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            proc = self.procs.pop(name, None)
            _terminate(pid, proc)
        (self.state / "pids.json").write_text(json.dumps(self.pids) + "\n")
        for conf in (CONF_DIR / "slurm.conf", CONF_DIR / "gres.conf"):
            if conf.exists() and _ours(conf):
                conf.unlink()


def _terminate(pid: int, proc: subprocess.Popen | None, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)


def start_cluster(state: Path) -> Cluster:
    """Install (if needed), configure and start the cluster; ``ClusterUnavailable`` says why it cannot."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("not root (the test cluster installs packages and runs slurmd as root)")
    ensure_installed()
    cluster = Cluster(Path(state).resolve())
    cluster.state.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__.split("\n\n")[-1].strip(), file=sys.stderr)
        return 2
    state = Path(argv[2]).resolve()
    if argv[1] == "start":
        try:
            cluster = start_cluster(state)
        except ClusterUnavailable as e:
            print(f"cannot start the test cluster: {e}", file=sys.stderr)
            return 1
        print(json.dumps(cluster.pids))
        return 0
    pids = json.loads((state / "pids.json").read_text())
    for name in ("munged", "slurmctld", "slurmd"):  # only PIDs whose program is still the one recorded
        if name in pids and name not in _cmdline(pids[name]):
            pids.pop(name)
    Cluster(state, pids=pids).stop()
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
