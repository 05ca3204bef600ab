"""A real `sandgate serve` for tests, and checks on the processes of its sandboxes.

The gateway runs on the process driver by default. Set SANDGATE_PYTEST_SERVE_ARGS to replace the
arguments that follow `serve --listen ADDR --data-dir DIR` (default: "--reconcile-interval 1s").
Set SANDGATE_BIN to the sandgate binary; by default it is target/debug/sandgate of this
repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sandgate

REPO_DIR = Path(__file__).resolve().parents[3]
DEFAULT_SERVE_ARGS = "--reconcile-interval 1s"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# A command that ignores SIGTERM, so that only the forced kill after the grace period ends it.
IGNORE_TERM = ["sh", "-c", 'trap "" TERM; sleep 1000']
SLEEP = ["sleep", "1000"]
# Bound of every wait on an event in the tests.
EVENT_TIMEOUT = 20.0
SERVING_LINE = re.compile(r"sandgate serving listen=(127\.0\.0\.1:\d+)")


def sandgate_binary() -> Path:
    """Return the sandgate binary from SANDGATE_BIN, else target/debug/sandgate of the repo."""
    configured = os.environ.get("SANDGATE_BIN")
    binary = Path(configured) if configured else REPO_DIR / "target" / "debug" / "sandgate"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise FileNotFoundError(
            f"sandgate binary {binary} not found or not executable: build it with "
            f"`cargo build -p sandgate-cli` in {REPO_DIR}, or set SANDGATE_BIN"
        )
    return binary


def serve_args() -> list[str]:
    """Return the `serve` arguments after --listen and --data-dir."""
    return shlex.split(os.environ.get("SANDGATE_PYTEST_SERVE_ARGS", DEFAULT_SERVE_ARGS))


@dataclass(frozen=True)
class Process:
    """One process, identified by pid and start time so that a reused pid does not match."""

    pid: int
    start_time: int

    def alive(self) -> bool:
        """Tell whether this process still exists and is not a zombie."""
        stat = read_stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.start_time


def read_stat(pid: int) -> list[str] | None:
    """Return the fields of /proc/PID/stat after the command name (field 3 first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[Process]:
    """Return every live descendant of process `root`, found through /proc parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is None:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
    found = []
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        stat = read_stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        found.append(Process(pid, int(stat[19])))
        pending.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class Handle:
    """The process driver's handle.json of one sandbox: its supervisor and its cgroup."""

    sandbox_id: str
    supervisor: Process
    cgroup: str | None

    def cgroup_members(self) -> list[Process]:
        """Return the live processes listed in the sandbox's cgroup, if it has one."""
        if not self.cgroup:
            return []
        try:
            pids = Path(self.cgroup, "cgroup.procs").read_text().split()
        except (FileNotFoundError, OSError):
            return []
        members = []
        for pid in pids:
            stat = read_stat(int(pid))
            if stat is not None and stat[0] != "Z":
                members.append(Process(int(pid), int(stat[19])))
        return members

    def processes(self) -> set[Process]:
        """Return the supervisor and every live process under it or in its cgroup."""
        found = {self.supervisor} if self.supervisor.alive() else set()
        found.update(descendants(self.supervisor.pid) if self.supervisor.alive() else [])
        found.update(self.cgroup_members())
        return found

    def kill(self) -> None:
        """Kill every process of the sandbox: through the cgroup if any, else by SIGKILL."""
        if self.cgroup and Path(self.cgroup, "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                Path(self.cgroup, "cgroup.kill").write_text("1")
        for process in [*descendants(self.supervisor.pid), self.supervisor]:
            if process.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)


class Gateway:
    """A `sandgate serve` process on a loopback port, with its data directory."""

    def __init__(
        self, data_dir: Path, log_path: Path, extra_args: list[str] | None = None
    ) -> None:
        """`extra_args` replaces the `serve` arguments of SANDGATE_PYTEST_SERVE_ARGS."""
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = serve_args() if extra_args is None else extra_args
        self.address = ""
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._log_thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        # Every handle seen, so that cleanup still finds sandboxes whose directory is gone.
        self._handles: dict[str, Handle] = {}

    def start(self, port: int = 0) -> None:
        """Start the gateway and wait until it logs its address; port 0 lets it choose one."""
        command = [
            str(sandgate_binary()),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process = process
        serving = threading.Event()

        def copy_log() -> None:
            assert process.stderr is not None
            with self.log_path.open("a") as log:
                for line in process.stderr:
                    log.write(line)
                    log.flush()
                    match = SERVING_LINE.search(line)
                    if match and not serving.is_set():
                        self.address = match.group(1)
                        self.port = int(self.address.rsplit(":", 1)[1])
                        serving.set()
            process.stderr.close()

        self._log_thread = threading.Thread(target=copy_log, daemon=True)
        self._log_thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not serving.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"`{shlex.join(command)}` did not log 'sandgate serving' within "
                    f"{START_TIMEOUT:g} s (exit status {process.poll()}); log:\n{self.log_tail()}"
                )

    def restart(self) -> None:
        """Start the gateway again on the port it had, with the same data directory."""
        self.start(self.port)

    @property
    def running(self) -> bool:
        """Whether the gateway process is running."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the gateway with SIGTERM, and with SIGKILL if it does not exit in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._log_thread is not None:
            self._log_thread.join(5)

    def handle(self, sandbox_id: str) -> Handle:
        """Read the process driver's handle of a sandbox, which exists once it started."""
        path = self.data_dir / "sandboxes" / sandbox_id / "handle.json"
        data = json.loads(path.read_text())
        handle = Handle(
            sandbox_id=sandbox_id,
            supervisor=Process(int(data["pid"]), int(data["start_time"])),
            cgroup=data.get("cgroup") or None,
        )
        self._handles[sandbox_id] = handle
        return handle

    def kill_sandboxes(self) -> None:
        """Kill every process of every sandbox this gateway started, and wait until gone."""
        sandboxes = self.data_dir / "sandboxes"
        if sandboxes.is_dir():
            for directory in sandboxes.iterdir():
                if (directory / "handle.json").exists():
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        self.handle(directory.name)
        for handle in self._handles.values():
            handle.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(handle.processes() for handle in self._handles.values()):
                break
            time.sleep(0.05)
        self.remove_cgroups()

    def remove_cgroups(self) -> None:
        """Remove the cgroups of the sandboxes seen, deepest first, and their base once empty.

        A process killed a moment ago keeps its cgroup busy until it has exited, so the removal
        is tried again for up to 5 s.
        """
        cgroups = [Path(handle.cgroup) for handle in self._handles.values() if handle.cgroup]
        bases = {cgroup.parent for cgroup in cgroups}
        deadline = time.monotonic() + 5
        while True:
            for path in [
                *(cgroup / leaf for cgroup in cgroups for leaf in ("payload", "supervisor")),
                *cgroups,
                *bases,
            ]:
                with contextlib.suppress(OSError):
                    path.rmdir()
            left = [path for path in [*cgroups, *bases] if path.exists()]
            if not left or time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the gateway's log."""
        try:
            return "".join(self.log_path.read_text().splitlines(keepends=True)[-lines:])
        except FileNotFoundError:
            return "(no log)"


def wait_until(condition, timeout: float, message: str, interval: float = 0.05) -> None:
    """Poll `condition` until it is true; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {message}")
        time.sleep(interval)


def wait_for_phase(
    client: sandgate.Client, sandbox_id: str, phase: sandgate.Phase, timeout: float = EVENT_TIMEOUT
) -> sandgate.Sandbox:
    """Watch the sandbox until it is in `phase`, and return it."""
    for event in client.watch(id=sandbox_id, timeout=timeout):
        if event.sandbox is not None and event.sandbox.phase == phase:
            return event.sandbox
        if event.type == sandgate.WatchEventType.DELETED:
            break
    raise AssertionError(f"sandbox {sandbox_id} was removed before it reached {phase}")


def processes_of(gateway: Gateway, sandbox_id: str) -> tuple[Handle, set[Process]]:
    """Return the handle and the live processes of a started sandbox.

    The supervisor and at least one process under it must be alive.
    """
    # NOTE: this reads the process driver's handle.json. A test run with another driver through
    # SANDGATE_PYTEST_SERVE_ARGS needs its own check that the compute is gone.
    handle = gateway.handle(sandbox_id)
    processes = handle.processes()
    assert handle.supervisor in processes, f"supervisor of {sandbox_id} is not running"
    assert len(processes) >= 2, f"sandbox {sandbox_id} runs no command under its supervisor"
    return handle, processes


def assert_all_gone(processes: set[Process]) -> None:
    """Assert that none of `processes` is alive."""
    alive = sorted(process.pid for process in processes if process.alive())
    assert alive == [], f"processes still alive: {alive}"


def elapsed_since(start: float) -> float:
    """Return the seconds since the monotonic time `start`."""
    return time.monotonic() - start
