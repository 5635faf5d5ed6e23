"""A sandbox per attempt (bubblewrap): an agent sees its own folder, not the machine (docs/security.md).

Agents run model-written commands as the worker's user. With `kind = "bwrap"` (the default where the
start-up probe finds bwrap working; else `none`, and the services and `squad doctor` say why) the agent, its
children and the attempt's hooks run inside `bwrap`: the system read-only, a private `/tmp` and
home, the card's working directory (and, in a workspace, the repository's git dir) read-write,
`rw_paths`/`ro_paths` from the settings and the agent's preset, and nothing else: no store, config,
`.squad/`, logs, other cards' prompts or folders, rest of the home. It has its own PID namespace
(no other process is visible or can be signalled, and the whole namespace dies with its first
process), a new session (no terminal injection), dies with the worker, and with `network = "off"`
an empty network namespace (not even the machine's loopback: no Redis, no API). With `network =
"allow"` the namespace is as empty, and the attempt's egress proxy (squad.agents.egress, a Unix
socket bound in) is the one way out, to `allow_hosts` only: `squad.agents.egress_bridge` starts
every command inside and points `HTTP(S)_PROXY` at it.

Resources: `memory_mb`, `pids` and `cpu` go to a cgroup of the attempt where the machine lets us
create one (cgroup v2, or v1's memory/pids/cpu hierarchies), else `memory_mb` and `pids` become
rlimits (RLIMIT_AS, RLIMIT_NPROC; the latter does not bind root) and the run says so.

A card whose sandbox cannot be built fails (`SandboxError`), never silently runs unconfined.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from squad.agents.egress import EgressProxy
from squad.core.errors import SquadError
from squad.core.hostpatterns import parse_pattern
from squad.core.settings import AgentConfig, SandboxConfig, Settings

__all__ = ["Sandbox", "SandboxError", "build", "config_for", "effective_kind", "fallback", "fallback_warning",
           "for_attempt", "for_command", "init_of", "limits_here", "members", "preset_hosts", "preset_paths", "probe",
           "read_init", "reap_init", "signal_inside"]

PROBE_TIMEOUT_S = 10.0
_TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"
#: The system, read-only (each only where it exists; a merged-/usr symlink stays a symlink).
SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/var/lib/dpkg",
             "/usr/local")
#: What an agent's own command needs in its home, by the program's name (presets).
PRESET_PATHS: dict[str, tuple[list[str], list[str]]] = {  # name -> (rw_paths, ro_paths)
    "claude": (["~/.claude", "~/.claude.json"], []),
    "codex": (["~/.codex"], []),
    "aider": (["~/.aider"], ["~/.aider.conf.yml"]),
}
#: The hosts an agent's own command talks to (its model's API, its sign-in), by the program's name:
#: added to `allow_hosts` (they matter with `network = "allow"` only)
PRESET_HOSTS: dict[str, list[str]] = {
    "claude": ["api.anthropic.com", "statsig.anthropic.com", "console.anthropic.com"],
    "codex": ["api.openai.com", "chatgpt.com", "auth.openai.com"],
}
#: What runs first inside a sandbox with `network = "allow"` (standard library only: no site, no venv)
BRIDGE = str(Path(__file__).with_name("egress_bridge.py"))
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: What an operator does about the fallback to `none` (the warning and `squad doctor` say it)
FALLBACK_FIX = 'install bubblewrap or allow user namespaces, or set [sandbox] kind = "none" to choose it'
_CGROUP_PREFIX = "squad-"


LineSink = Callable[[str, str], None]  # (level, message) on the card's log


class SandboxError(SquadError):
    """The attempt's sandbox cannot be built or started."""


def bwrap_path(configured: str | None = None) -> str | None:
    """The bubblewrap binary (`configured`, else `bwrap` in the system folders), if installed."""
    return shutil.which(configured or "bwrap", path=_TOOL_PATH)


@functools.cache
def probe(configured: str | None = None) -> str | None:
    """None when bwrap can build a sandbox here (PID and network namespaces), else why not.

    Run once per process and binary: a container without user namespaces, or a seccomp profile
    refusing them, makes bwrap fail at once.
    """
    binary = bwrap_path(configured)
    if binary is None:
        return "bwrap is not installed (Debian package bubblewrap)"
    report, into = os.pipe()  # its init may outlive bwrap: reaped here, not left a zombie of a subreaper
    try:
        proc = subprocess.run([binary, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
                               "--unshare-net", "--die-with-parent", "--new-session", "--info-fd", str(into),
                               "--", "/bin/true"], pass_fds=(into,),
                              capture_output=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.close(report)
        return f"bwrap does not run: {exc}"
    finally:
        os.close(into)
    init = read_init(report, timeout_s=0.0)  # bwrap has ended: all it wrote is there
    if init is not None:
        reap_init(*init, timeout_s=PROBE_TIMEOUT_S)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap does not work here: {lines[-1] if lines else f'exit code {proc.returncode}'}"
    return None


def effective_kind(config: SandboxConfig) -> str:
    """The kind an attempt runs with: the configured one, else `bwrap` where the probe passes."""
    if config.kind is not None:
        return config.kind
    return "bwrap" if probe(config.bwrap) is None else "none"


def fallback(config: SandboxConfig) -> str | None:
    """Why attempts run unconfined although no `kind` was chosen (bwrap does not work here), else
    None. The services say it once at start (`fallback_warning`), `squad doctor` as a finding."""
    return probe(config.bwrap) if config.kind is None else None


def fallback_warning(config: SandboxConfig) -> str | None:
    """The start-up warning of a worker, orchestrator or `squad up` running agents unconfined by default."""
    why = fallback(config)
    return None if why is None else f"sandbox: none, agents run unconfined: {why} ({FALLBACK_FIX})"


def for_attempt(settings: Settings, agent: AgentConfig, *, workdir: Path, env: dict[str, str], prompt_file: Path,
                git_dir: Path | None, log: LineSink | None = None) -> Sandbox:
    """The sandbox of one attempt of `agent` in `workdir`: its program and prompt file readable, a
    worktree's git dir writable (its commits go there); `log` gets its egress proxy's refusals."""
    return for_command(config_for(settings, agent), agent.command, workdir=workdir, env=env,
                       ro_paths=[prompt_file], git_dir=git_dir, log=log)


def for_command(config: SandboxConfig, argv: list[str], *, workdir: Path, env: dict[str, str],
                git_dir: Path | None, ro_paths: list[Path] | None = None, log: LineSink | None = None) -> Sandbox:
    """The sandbox of one command (an agent, a landing's verify) working in `workdir`; `close()` it."""
    if effective_kind(config) == "none":  # nothing is bound: the program is not looked up (PATH walk)
        return Sandbox(kind="none")
    program = argv[0]
    if os.sep not in program:
        program = shutil.which(program, path=env.get("PATH", os.defpath)) or program
    elif not os.path.isabs(program):
        program = str(workdir / program)
    return build(config, workdir=workdir, program=program if os.path.isabs(program) else None,
                 ro_paths=ro_paths, rw_paths=[git_dir] if git_dir is not None else [], home=env.get("HOME"),
                 log=log)


def config_for(settings: Settings, agent: AgentConfig) -> SandboxConfig:
    """`[sandbox]` with the agent's own `[agents.X.sandbox]` on top, plus its preset's paths and hosts."""
    config = settings.sandbox.merged(agent.sandbox)
    rw, ro = preset_paths(agent.command)
    hosts = [host for host in preset_hosts(agent.command) if host not in config.allow_hosts]
    if rw or ro or hosts:
        config = config.model_copy(update={"rw_paths": [*config.rw_paths, *rw],
                                           "ro_paths": [*config.ro_paths, *ro],
                                           "allow_hosts": [*config.allow_hosts, *hosts]})
    return config


def preset_paths(command: list[str]) -> tuple[list[str], list[str]]:
    """The paths the agent named by `command[0]` needs (Claude: `~/.claude`, Codex: `~/.codex`...)."""
    return PRESET_PATHS.get(os.path.basename(command[0]) if command else "", ([], []))


def preset_hosts(command: list[str]) -> list[str]:
    """The hosts the agent named by `command[0]` talks to (Claude: `api.anthropic.com`...)."""
    return list(PRESET_HOSTS.get(os.path.basename(command[0]) if command else "", []))


@dataclass
class Sandbox:
    """One attempt's sandbox: an argv prefix, the cgroups its processes join, its egress proxy (with
    `network = "allow"`), and a description."""

    kind: str
    prefix: list[str] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)
    rlimits: list[tuple[int, int]] = field(default_factory=list)
    description: str = "none"
    proxy: EgressProxy | None = None
    #: where in `prefix` more bwrap options go (before `--chdir WORKDIR --`)
    bind_at: int = 0

    def preexec(self) -> Callable[[], None] | None:
        """A preexec_fn joining the attempt's cgroups (None without cgroups)."""
        if not self.cgroups:
            return None
        files = [str(group / "cgroup.procs") for group in self.cgroups]

        def join() -> None:
            pid = str(os.getpid()).encode()
            for name in files:
                fd = os.open(name, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)

        return join

    def with_bind(self, path: str) -> Sandbox:
        """This sandbox with `path` visible read-write too (e.g. the agent's MCP socket folder); the
        cgroups and the proxy stay this one's to close."""
        if not self.prefix:
            return self
        at = self.bind_at
        return replace(self, prefix=[*self.prefix[:at], "--bind", path, path, *self.prefix[at:]], bind_at=at + 3)

    def reporting_to(self, fd: int) -> Sandbox:
        """This sandbox with bwrap writing its init (pid, PID namespace) to `fd` as soon as it made
        them (`--info-fd`, read with `read_init`); pass `fd` to the child. Closing stays this one's."""
        if not self.prefix:
            return self
        at = self.bind_at
        return replace(self, prefix=[*self.prefix[:at], "--info-fd", str(fd), *self.prefix[at:]], bind_at=at + 2)

    def close(self) -> None:
        """Stop the egress proxy and remove the attempt's cgroups (their processes are gone by now)."""
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        for group in self.cgroups:
            with contextlib.suppress(OSError):
                group.rmdir()
        self.cgroups = []


def _expand(path: str, home: str) -> str:
    return os.path.normpath(home + path[1:] if path == "~" or path.startswith("~/") else path)


def build(config: SandboxConfig, *, workdir: Path, program: str | None = None, ro_paths: list[Path] | None = None,
          rw_paths: list[Path] | None = None, home: str | None = None, log: LineSink | None = None) -> Sandbox:
    """The sandbox of one attempt working in `workdir` (SandboxError when `bwrap` was asked for and
    cannot run). `program`: the agent's resolved executable, made visible; `ro_paths`/`rw_paths`:
    what squad itself adds (the prompt file, a worktree's git dir); `log`: where the egress proxy
    says what it refused (`network = "allow"`)."""
    kind = effective_kind(config)
    if kind == "none":
        return Sandbox(kind="none")
    problem = probe(config.bwrap)
    if problem is not None:
        raise SandboxError(f"sandbox bwrap cannot start: {problem}")
    binary = bwrap_path(config.bwrap)
    assert binary is not None  # the probe passed
    home = home or os.path.expanduser("~")
    args = [binary, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try"]
    if config.network in ("off", "allow"):
        args.append("--unshare-net")
    if os.geteuid() == 0:  # bwrap keeps a root caller's capabilities unless told
        args += ["--cap-drop", "ALL"]
    for path in SYSTEM_RO:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in config.hide:
        if os.path.isdir(path) and not os.path.islink(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", path]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var/tmp"]
    if os.path.isabs(home) and home != "/":
        args += ["--tmpfs", home]
    # squad's own Python (a venv, its prefix): the built-in demo agent and `python -m ...` agents need it
    readable = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parent.parent)}
    if program is not None:
        readable.add(program)
    if program is not None:
        readable.add(os.path.realpath(program))
    bound: list[str] = []
    for path in sorted(readable):  # a parent sorts before its children: bind it once
        if not path or _covered(path, [*SYSTEM_RO, *bound]):
            continue
        if os.path.islink(path):  # e.g. ~/.local/bin/claude: the link here, its target bound too
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind-try", path, path]
        bound.append(path)
    for path in [*(str(p) for p in ro_paths or []), *(_expand(p, home) for p in config.ro_paths)]:
        args += ["--ro-bind-try", path, path]
    for path in [*(str(p) for p in rw_paths or []), *(_expand(p, home) for p in config.rw_paths)]:
        args += ["--bind-try", path, path]
    args += ["--bind", str(workdir), str(workdir)]
    bind_at = len(args)
    args += ["--chdir", str(workdir), "--"]
    sandbox = Sandbox(kind="bwrap", prefix=args, bind_at=bind_at)
    notes = [f"network {config.network}"]
    if config.network == "allow":
        notes = [f"network allow: {_shown_hosts(config.allow_hosts)}"]
    _limit(sandbox, config, notes)
    sandbox.description = "bwrap (" + ", ".join(notes) + ")"
    if config.network == "allow":  # last: nothing after it can fail and leave the proxy running
        _egress(sandbox, config, log)
    return sandbox


def _shown_hosts(hosts: list[str], budget: int = 120) -> str:
    """The allowed hosts for the run's description (runs.sandbox holds 255 characters): the first
    ones that fit in `budget`, then how many more."""
    if not hosts:
        return "no hosts"
    shown: list[str] = []
    for host in hosts:
        if sum(len(h) + 2 for h in shown) + len(host) > budget:
            break
        shown.append(host)
    more = len(hosts) - len(shown)
    if not shown:
        return f"{more} hosts"
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _egress(sandbox: Sandbox, config: SandboxConfig, log: LineSink | None) -> None:
    """Start the attempt's egress proxy, bind its folder in, and put the bridge before the command."""
    proxy = EgressProxy([parse_pattern(host) for host in config.allow_hosts], log)
    try:
        folder = str(proxy.start())
    except OSError as exc:
        sandbox.close()
        raise SandboxError(f"sandbox egress proxy cannot start: {exc.strerror or exc}") from exc
    sandbox.proxy = proxy
    at = sandbox.bind_at
    sandbox.prefix[at:at] = ["--ro-bind", folder, folder]  # connecting needs no write access: the socket stays
    sandbox.bind_at = at + 3
    sandbox.prefix += [sys.executable, "-I", "-S", BRIDGE, str(proxy.socket_path), "--"]


def _covered(path: str, tops: list[str]) -> bool:
    """Whether `path` lies in one of `tops` (bound already)."""
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


# ---- its processes -----------------------------------------------------------------------------
def init_of(outer_pid: int) -> tuple[int, int] | None:
    """The init of the sandbox whose `bwrap` is `outer_pid` (bwrap's child, pid 1 inside) and its
    PID namespace's inode; None before the namespace exists or once it is gone."""
    try:
        children = Path(f"/proc/{outer_pid}/task/{outer_pid}/children").read_text().split()
        init = int(children[0])
        inode = os.stat(f"/proc/{init}/ns/pid").st_ino
    except (OSError, IndexError, ValueError):
        return None
    if inode == _own_pid_namespace():  # not a sandbox of its own (bwrap without --unshare-pid)
        return None
    return init, inode


def read_init(fd: int, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, int] | None:
    """The sandbox's init (its pid as the machine numbers it, its PID namespace's inode) from what
    bwrap wrote to `fd` (`Sandbox.reporting_to`), which this closes; None if bwrap ended before
    making it, or said nothing within `timeout_s`.

    bwrap writes it right after creating the namespace and closes the pipe (so does the init):
    known before the command inside runs, so an agent that exits at once still has its init
    reaped, which `init_of` (a look at bwrap's children) would miss once bwrap is gone."""
    data = b""
    try:
        deadline = time.monotonic() + timeout_s
        while select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        info = json.loads(data)
        return int(info["child-pid"]), int(info["pid-namespace"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def members(outer_pid: int) -> tuple[int | None, list[int]]:
    """The processes of the sandbox whose `bwrap` is `outer_pid`: its PID namespace's init and every
    other process of that namespace, as the machine numbers them; (None, []) without a namespace.

    bwrap forwards no signal: its init ignores SIGTERM and an outer bwrap that gets one dies, taking
    the namespace with it at once (SIGKILL through `--die-with-parent`), so a grace period has to
    reach the processes inside.
    """
    found = init_of(outer_pid)
    if found is None:
        return None, []
    init, inode = found
    inside = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != init:
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == inode:
                    inside.append(int(entry))
    return init, inside


def reap_init(init: int, inode: int, timeout_s: float) -> bool:
    """Wait (up to `timeout_s`) until the sandbox's init has exited, and reap it when it is ours.

    bwrap exits as soon as the agent does, before its init has finished ending the namespace: the
    init is then re-parented to the nearest subreaper (squad's process that spawns agents) and
    would stay there a zombie. True once it is gone (waited on through a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(init)
    except OSError:  # gone (reaped) already
        return True
    try:
        try:
            if os.stat(f"/proc/{init}/ns/pid").st_ino != inode:
                return True  # the pid names another process now
        except OSError:  # no namespace to read: a zombie (reaped below if it is our child) or gone
            if not _our_zombie(init):
                return True
        if not select.select([fd], [], [], timeout_s)[0]:
            return False
        with contextlib.suppress(ChildProcessError):  # someone else's child: theirs to reap
            os.waitpid(init, os.WNOHANG)
        return True
    except OSError:
        return True
    finally:
        os.close(fd)


def _our_zombie(pid: int) -> bool:
    """Whether `pid` is a zombie whose parent is this process (a sandbox's init that ended already)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2:].split()
    return len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == os.getpid()


@functools.cache
def _own_pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def signal_inside(outer_pid: int, sig: int) -> bool:
    """Send `sig` to every process inside the sandbox of `outer_pid` (SIGKILL: to its init too,
    which ends them all); False when there is no namespace (yet, or any more) to signal."""
    init, inside = members(outer_pid)
    if init is None:
        return False
    for pid in [*inside, *([init] if sig == signal.SIGKILL else [])]:
        _signal_if_inside(pid, init, sig)
    return True


def _signal_if_inside(pid: int, init: int, sig: int) -> None:
    """Signal `pid` only if it is still a process of the sandbox (a pidfd, checked, then signalled:
    a pid that ended and was given to another process meanwhile is left alone)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat(f"/proc/{init}/ns/pid").st_ino:
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- resources ----------------------------------------------------------------------------------
def _limit(sandbox: Sandbox, config: SandboxConfig, notes: list[str]) -> None:
    """Put memory_mb/pids/cpu on a cgroup of the attempt, or on rlimits where there is none."""
    wanted = {"memory": config.memory_mb, "pids": config.pids, "cpu": config.cpu}
    if not any(value is not None for value in wanted.values()):
        return
    made = _cgroup_v2(wanted) if (CGROUP_ROOT / "cgroup.controllers").exists() else _cgroup_v1(wanted)
    done: set[str] = set()
    for group, controller in made:
        sandbox.cgroups.append(group)
        done.add(controller)
    for name, value in wanted.items():
        if value is None:
            continue
        if name in done:
            notes.append(f"{name} {value:g} (cgroup)")
        elif name == "memory":
            sandbox.rlimits.append((resource.RLIMIT_AS, int(value) * 1024 * 1024))
            notes.append(f"memory {value:g} (rlimit: no writable cgroup)")
        elif name == "pids":
            sandbox.rlimits.append((resource.RLIMIT_NPROC, int(value)))
            notes.append(f"pids {value:g} (rlimit: no writable cgroup)")
        else:
            notes.append("cpu not limited (no writable cgroup)")


def limits_here() -> dict[str, str]:
    """How `memory_mb`, `pids` and `cpu` would bind an attempt this process starts, found without
    creating anything (`squad doctor`): "cgroup v2"/"cgroup v1" where a cgroup of the attempt can
    be made, else "rlimit" (memory, pids) or "not limited" (cpu)."""
    found = {"memory": "rlimit", "pids": "rlimit", "cpu": "not limited"}
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        own = _own_cgroup("")
        parent = CGROUP_ROOT / (own or "").lstrip("/")
        try:
            available = (parent / "cgroup.controllers").read_text().split()
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            # a controller can be enabled below the root only while no process sits in the group itself
            can_enable = parent == CGROUP_ROOT or not (parent / "cgroup.procs").read_text().strip()
        except OSError:
            return found
        if own is not None and os.access(parent, os.W_OK):
            for name in found:
                if name in enabled or (name in available and can_enable):
                    found[name] = "cgroup v2"
        return found
    for name in found:
        own = _own_cgroup(name)
        if own is not None and os.access(CGROUP_ROOT / name / own.lstrip("/"), os.W_OK):
            found[name] = "cgroup v1"
    return found


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of `controller` ("" for v2's unified one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _num, controllers, path = line.split(":", 2)
        if controllers.split(",") == [controller] or (controller == "" and controllers == ""):
            return path
        if controller and controller in controllers.split(","):
            return path
    return None


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _cgroup_v2(wanted: dict[str, float | int | None]) -> list[tuple[Path, str]]:
    own = _own_cgroup("")
    if own is None:
        return []
    parent = CGROUP_ROOT / own.lstrip("/")
    group = parent / f"{_CGROUP_PREFIX}{uuid.uuid4().hex[:12]}"
    names = [name for name, value in wanted.items() if value is not None]
    _write(parent / "cgroup.subtree_control", " ".join(f"+{name}" for name in names))
    try:
        group.mkdir()
    except OSError:
        return []
    made: list[tuple[Path, str]] = []
    for name in names:
        value = wanted[name]
        assert value is not None
        text = {"memory": f"{int(value) * 1024 * 1024}", "pids": f"{int(value)}",
                "cpu": f"{int(float(value) * 100_000)} 100000"}[name]
        if _write(group / {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}[name], text):
            made.append((group, name))
    if made:
        if any(name == "memory" for _group, name in made):
            _write(group / "memory.swap.max", "0")
        return made
    with contextlib.suppress(OSError):
        group.rmdir()
    return []


def _cgroup_v1(wanted: dict[str, float | int | None]) -> list[tuple[Path, str]]:
    made: list[tuple[Path, str]] = []
    suffix = f"{_CGROUP_PREFIX}{uuid.uuid4().hex[:12]}"
    for name, value in wanted.items():
        if value is None:
            continue
        own = _own_cgroup(name)
        if own is None or not (CGROUP_ROOT / name).is_dir():
            continue
        group = CGROUP_ROOT / name / own.lstrip("/") / suffix
        try:
            group.mkdir()
        except OSError:
            continue
        if name == "memory":
            ok = _write(group / "memory.limit_in_bytes", str(int(value) * 1024 * 1024))
            _write(group / "memory.memsw.limit_in_bytes", str(int(value) * 1024 * 1024))
        elif name == "pids":
            ok = _write(group / "pids.max", str(int(value)))
        else:
            ok = _write(group / "cpu.cfs_period_us", "100000") and _write(
                group / "cpu.cfs_quota_us", str(int(float(value) * 100_000)))
        if ok:
            made.append((group, name))
        else:
            with contextlib.suppress(OSError):
                group.rmdir()
    return made
