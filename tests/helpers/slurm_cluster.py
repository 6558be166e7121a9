"""A one-machine SLURM cluster for the tests, from Debian's packages (slurm-wlm, munge).

:func:`start_cluster` writes a ``slurm.conf`` for this machine alone (one node with the CPUs and
memory ``slurmd -C`` reports, one default partition, no accounting database, no cgroups), starts
its own ``munged`` (own key and socket), ``slurmctld`` and ``slurmd`` as root, and waits until
``sinfo`` shows the node idle. :meth:`SlurmCluster.stop` cancels what is left and stops all three.

The configuration is written to ``/etc/slurm/slurm.conf`` (and ``SLURM_CONF`` points there while
the cluster runs): snakemake-executor-plugin-slurm-jobstep removes every ``SLURM_*`` variable,
``SLURM_CONF`` included, before it calls ``srun`` inside a job, so ``srun`` reads the default
path. A configuration there that this module did not write is never overwritten. The daemons
listen on free ports, not SLURM's defaults, so a cluster the machine belongs to is not disturbed.

Without the packages, root or a working munge, :class:`ClusterUnavailable` says what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Where the SLURM tools look for their configuration when SLURM_CONF is unset (Debian).
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
#: The first line of every configuration this module writes: the mark that it may replace it.
MARK = "# Written by actspace tests/slurm_cluster.py for a one-machine test cluster; removed after."
PARTITION = "debug"
CLUSTER_NAME = "actspace-test"
REQUIRED = ("munged", "mungekey", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
INSTALL_HINT = "install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be started here; the message says why and what to install or do."""


@dataclass
class SlurmCluster:
    """A running one-machine cluster: its node, configuration and daemons."""

    root: Path
    conf: Path
    node: str
    cpus: int
    memory_mb: int
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    previous_conf_env: str | None = None

    @property
    def logs(self) -> Path:
        return self.root / "log"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM command against this cluster."""
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=60, check=check, env=self.env()
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def node_state(self) -> str:
        done = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return done.stdout.strip() if done.returncode == 0 else f"sinfo failed: {done.stderr}"

    def finished_jobs(self) -> list[dict[str, str]]:
        """Every job that has finished, from the job completion log (one ``Key=value`` line per
        job: JobId, JobState, WorkDir, ArrayJobId, ArrayTaskId, ...)."""
        log = self.logs / "jobcomp.txt"
        if not log.is_file():
            return []
        return [
            dict(item.split("=", 1) for item in line.split() if "=" in item)
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()
        ]

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each daemon's log, for error messages."""
        parts = []
        for log in sorted([*self.logs.glob("*.log"), *self.logs.glob("*.out")]):
            text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel the jobs left, stop the daemons (newest first), remove the configuration."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--user", str(os.getuid()), check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is not None:
                _terminate(process)
        if SYSTEM_CONF.is_file() and _is_ours(SYSTEM_CONF):
            SYSTEM_CONF.unlink()
        if self.previous_conf_env is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self.previous_conf_env
        shutil.rmtree(self.root, ignore_errors=True)


def _terminate(process: subprocess.Popen, wait: float = 15) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=wait)


def _is_ours(path: Path) -> bool:
    return path.read_text(encoding="utf-8", errors="replace").startswith(MARK)


def _free_ports() -> tuple[int, int]:
    """Two distinct free TCP ports (for slurmctld and slurmd)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second,
    ):
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return int(first.getsockname()[1]), int(second.getsockname()[1])


def node_hardware() -> tuple[str, dict[str, str]]:
    """This machine's short host name and its node line from ``slurmd -C`` (CPUs, sockets, cores,
    threads, RealMemory), without the UpTime line."""
    name = subprocess.run(
        ["hostname", "-s"], capture_output=True, text=True, check=True
    ).stdout.strip()
    done = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise ClusterUnavailable(f"slurmd -C failed: {done.stderr.strip()}")
    first = done.stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in first.split())
    fields.pop("NodeName", None)
    return name, fields


def slurm_conf(
    root: Path, node: str, hardware: Mapping[str, str], ports: tuple[int, int], munge_socket: Path
) -> str:
    """The configuration of a one-machine cluster: no accounting database (so ``sacct`` does not
    answer and job states come from ``squeue``; MinJobAge keeps finished jobs there 300 s), no
    cgroups (process tracking through /proc, no task binding), CPUs and memory as consumables,
    and a job completion log in plain text."""
    node_line = " ".join(f"{key}={value}" for key, value in hardware.items())
    return "\n".join(
        [
            MARK,
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={ports[0]}",
            f"SlurmdPort={ports[1]}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "MailProg=/bin/true",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            # A plain-text record of every finished job (not an accounting database).
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
            "MinJobAge=300",
            "ReturnToService=2",
            "KillWait=5",
            f"NodeName={node} NodeAddr=127.0.0.1 {node_line} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _wait_for(check, timeout: float, what: str, cluster: SlurmCluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = f"\n{cluster.log_tails()}" if cluster is not None else ""
    raise ClusterUnavailable(f"{what} within {timeout:.0f} s{tails}")


def _start_munge(root: Path) -> tuple[subprocess.Popen, Path]:
    """A munged of our own: its own key and socket under ``root`` (munged wants the socket's
    folder open to all, as /run/munge is)."""
    folder = root / "munge"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    key = folder / "munge.key"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, timeout=30)
    sock = folder / "munge.socket"
    with (root / "log" / "munged.log").open("w") as log:
        process = subprocess.Popen(
            [
                "munged",
                "--foreground",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={folder / 'munged.pid'}",
                f"--seed-file={folder / 'munged.seed'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def answers() -> bool:
        if process.poll() is not None:
            raise ClusterUnavailable(
                "munged exited: " + (root / "log" / "munged.log").read_text(errors="replace")
            )
        encode = subprocess.run(["munge", "-n", "-S", str(sock)], capture_output=True)
        return encode.returncode == 0

    _wait_for(answers, 20, "munged did not answer")
    return process, sock


def start_cluster() -> SlurmCluster:
    """Start a one-machine cluster (as root); raise :class:`ClusterUnavailable` saying why not."""
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
    if missing:
        raise ClusterUnavailable(f"{', '.join(missing)} not found: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd and slurmctld must run as root for the test cluster")
    if SYSTEM_CONF.exists() and not _is_ours(SYSTEM_CONF):
        raise ClusterUnavailable(
            f"{SYSTEM_CONF} exists and was not written by the tests: not overwriting this "
            "machine's SLURM configuration"
        )
    node, hardware = node_hardware()
    # A folder of our own under /tmp, not pytest's (munged refuses a socket whose folder's
    # parents are closed to others, and pytest's base folder is).
    root = Path(tempfile.mkdtemp(prefix="actspace-slurm-"))
    root.chmod(0o755)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    cluster = SlurmCluster(
        root=root,
        conf=SYSTEM_CONF,
        node=node,
        cpus=int(hardware.get("CPUs", "1")),
        memory_mb=int(hardware.get("RealMemory", "1000")),
        previous_conf_env=os.environ.get("SLURM_CONF"),
    )
    try:
        munged, munge_socket = _start_munge(root)
        cluster.processes["munged"] = munged
        ports = _free_ports()
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(slurm_conf(root, node, hardware, ports, munge_socket))
        os.environ["SLURM_CONF"] = str(SYSTEM_CONF)
        for daemon, flags in (("slurmctld", ["-c", "-i"]), ("slurmd", [])):
            with (root / "log" / f"{daemon}.out").open("w") as out:
                cluster.processes[daemon] = subprocess.Popen(
                    [daemon, "-D", *flags, "-f", str(SYSTEM_CONF)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=cluster.env(),
                )

        def idle() -> bool:
            for daemon in ("slurmctld", "slurmd"):
                if cluster.processes[daemon].poll() is not None:
                    raise ClusterUnavailable(f"{daemon} exited:\n{cluster.log_tails()}")
            return cluster.node_state() == "idle"

        _wait_for(idle, 60, f"node {node} did not become idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster
