"""Run one VM: the argv comes from the arch data (toolchains/arch/*.toml [qemu]), KVM when /dev/kvm is
usable for the guest arch, else TCG; a hard timeout; the process is killed on timeout, on Ctrl-C and on
exit, and never left behind. The console is streamed line by line, timestamped, into a log file."""
import atexit
import fcntl
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .. import run as runmod
from ..arch import Arch, get as get_arch
from ..errors import InfraError
from ..flavour import GENERIC, get as get_flavour

# Kernel command line common to every boot test: no reboot on panic (QEMU exits: -no-reboot), quiet
# until /init raises the console level itself, and /dev/kmsg writes from /init never rate-limited.
# Expedited RCU grace periods: rmmod waits for several (unregister_kprobe's synchronize_rcu, the module's
# freeing), and a 6.12 guest with one CPU waits for a whole normal one each time, tick by tick (the non-RT
# 5.10 and 6.1 kernels end such a wait at once on one CPU). Measured with bench_boot.py --guest-time
# (QEMU -icount): the rmmod step of trixie-6.12/arm64 took 343 -> 12 ms of guest time (generic), 196 ->
# 10 ms (cloud). What a boot test proves (the module loads, its probes fire, it unloads) is the same.
BASE_APPEND = ("panic=-1", "oops=panic", "quiet", "loglevel=4", "printk.devkmsg=on", "rcupdate.rcu_expedited=1")
DEFAULT_TIMEOUT = 300.0  # seconds per VM: generous, TCG on a loaded 2-core machine boots in ~5 s
KVM_GET_API_VERSION, KVM_CREATE_VM = 0xAE00, 0xAE01
# What QEMU prints when KVM cannot run the guest after all: nested setups where /dev/kvm creates vCPUs
# but fails to emulate an instruction (seen: "KVM internal error. Suberror: 1 ... emulation failure"
# on `lock cmpxchg16b`). The guest then hangs until the timeout; instead the VM is stopped at once and
# booted again under TCG.
KVM_FAILURES = ("KVM internal error", "kvm run failed")

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_stopping = False  # set by kill_all(stop=True): no VM starts after an interrupt
# Arches whose KVM failed a real boot in this process (KVM_FAILURES): a fact about this host, the same
# for every thread, so every later VM of that arch goes straight to TCG.
_kvm_broken: set[str] = set()


def _host_arch() -> Arch | None:
    try:
        return get_arch(platform.machine())
    except Exception:
        return None


@cache
def kvm_usable(arch: Arch) -> bool:
    """True when this host can run `arch` guests under KVM: same arch, /dev/kvm creates a VM, and QEMU
    itself starts a KVM vCPU (nested setups exist where /dev/kvm opens but the vCPU cannot be set up)."""
    host = _host_arch()
    if host is None or host.name != arch.name or not shutil.which(arch.qemu["binary"]):
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
            return False
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
    except OSError:
        return False
    finally:
        os.close(fd)
    q = arch.qemu
    probe = [q["binary"], "-machine", f"{q.get('kvm_machine', q['machine'])},accel=kvm", "-cpu", q.get("kvm_cpu", "host"),
             "-m", "64", "-nodefaults", "-display", "none", "-S", "-monitor", "stdio"]
    try:
        res = subprocess.run(probe, input=b"quit\n", capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def accel_for(arch: Arch) -> str:
    """KMOD_BOOT_ACCEL=tcg|kvm forces one (kvm fails loudly when unusable); default: kvm if usable."""
    forced = os.environ.get("KMOD_BOOT_ACCEL", "").strip().lower()
    if forced == "tcg":
        return "tcg"
    if forced == "kvm":
        if not kvm_usable(arch):
            raise InfraError(f"KMOD_BOOT_ACCEL=kvm but /dev/kvm cannot run {arch.name} guests here")
        return "kvm"
    if forced:
        raise InfraError(f"KMOD_BOOT_ACCEL={forced!r} is not tcg or kvm")
    with _live_lock:
        broken = arch.name in _kvm_broken
    return "kvm" if not broken and kvm_usable(arch) else "tcg"


def argv(arch: Arch, kernel: Path, initrd: Path, append: list[str] | tuple[str, ...] = (),
         accel: str = "tcg", flavour: str = GENERIC) -> list[str]:
    """The QEMU command line. The kernel's: the common words, the arch's, the flavour's (boot_append in
    toolchains/flavours/*.toml: every boot of that kernel gets them, test and bare boot alike), then
    `append` (which may end with "-- ARGS" for init, so it comes last)."""
    q = arch.qemu
    cpu = q.get("kvm_cpu", "host") if accel == "kvm" else q["cpu"]
    machine = q.get("kvm_machine", q["machine"]) if accel == "kvm" else q["machine"]
    cmdline = [f"console={q['console']}", *BASE_APPEND, *q.get("append", []), *get_flavour(flavour).boot_append,
               *append]
    return [q["binary"], "-machine", f"{machine},accel={accel}", "-cpu", cpu,
            "-m", str(q.get("memory", "512M")), "-smp", str(q.get("smp", 1)),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(cmdline),
            *q.get("extra_args", [])]


def require_binary(arch: Arch) -> str:
    path = shutil.which(arch.qemu["binary"])
    if not path:
        raise InfraError(f"{arch.qemu['binary']} is not installed",
                         f"apt-get install {arch.qemu['package']} (or scripts/setup --test: every arch's QEMU)")
    return path


@dataclass
class Run:
    argv: list[str]
    exit_code: int | None = None
    timed_out: bool = False
    interrupted: bool = False
    aborted: str = ""          # the console line (one of `abort_on`) that made the runner stop the VM
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # first line containing key -> seconds

    @property
    def console(self) -> str:
        return "\n".join(self.lines)


def _kill_group(proc: subprocess.Popen) -> None:
    runmod.kill_group(proc)   # QEMU is its own group leader (start_new_session)


def _kill(proc: subprocess.Popen) -> None:
    _kill_group(proc)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def kill_all(stop: bool = False) -> None:
    """Kill every VM still running (Ctrl-C, exit); with `stop`, refuse to start new ones until allow()."""
    global _stopping
    with _live_lock:
        _stopping = _stopping or stop
        procs = list(_live)
    for p in procs:
        _kill(p)


def allow() -> None:
    global _stopping
    with _live_lock:
        _stopping = False


def _guarded(cmd: list[str]) -> list[str]:
    """The VM dies with the thread that started it, even when this process is SIGKILLed (no atexit
    then): setpriv --pdeathsig, where util-linux has it."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


atexit.register(kill_all)


def boot(arch: Arch, kernel: Path, initrd: Path, append: tuple[str, ...], timeout: float,
         log: Path | None = None, marks: tuple[str, ...] = (), on_line=None,
         flavour: str = GENERIC) -> tuple[Run, str]:
    """Boot a VM with the best accelerator; returns the run and the accelerator it ran under. When KVM
    turns out unable to run the guest (KVM_FAILURES on the console), KVM is dropped for this arch for
    the rest of the process and the same VM boots again under TCG, with one line that says so."""
    accel = accel_for(arch)
    while True:
        cmd = argv(arch, kernel, initrd, append, accel, flavour)
        result = run(cmd, timeout, log=log, marks=marks, on_line=on_line,
                     header=f"# reproduce: {shlex.join(cmd)}\n",
                     abort_on=KVM_FAILURES if accel == "kvm" else ())
        if not result.aborted or os.environ.get("KMOD_BOOT_ACCEL", "").strip().lower() == "kvm":
            return result, accel
        with _live_lock:
            first = arch.name not in _kvm_broken
            _kvm_broken.add(arch.name)
        if first:
            print(f"boot: KVM cannot run {arch.name} guests on this host ({result.aborted.strip()}); "
                  f"using TCG", file=sys.stderr, flush=True)
        accel = "tcg"


def run(cmd: list[str], timeout: float, log: Path | None = None, marks: tuple[str, ...] = (),
        on_line=None, header: str = "", abort_on: tuple[str, ...] = ()) -> Run:
    """Run QEMU until it exits or `timeout` seconds pass. `marks`: strings whose first appearance on the
    console is timestamped (seconds since start). A line containing one of `abort_on` stops the VM at
    once (recorded in Run.aborted)."""
    result = Run(cmd)
    log_f = open(log, "w", encoding="utf-8", errors="replace") if log else None
    if log_f and header:
        log_f.write(header)
    started = time.monotonic()
    with _live_lock:  # a kill_all() either sees this VM or stops it from starting
        try:
            if _stopping:
                raise InfraError("interrupted: no further VM is started")
            proc = subprocess.Popen(_guarded(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, InfraError) as e:
            if log_f:
                log_f.close()
            raise e if isinstance(e, InfraError) else InfraError(f"cannot start {cmd[0]}: {e}") from None
        _live.add(proc)

    def reader():
        pending = [m for m in marks]
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            now = time.monotonic() - started
            result.lines.append(line)
            for m in list(pending):
                if m in line:
                    result.marks[m] = now
                    pending.remove(m)
            if log_f:
                log_f.write(line + "\n")
            if on_line:
                on_line(line)
            if not result.aborted and any(a in line for a in abort_on):
                result.aborted = line
                _kill_group(proc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        result.exit_code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        result.timed_out = True
    except BaseException:
        result.interrupted = True
        raise
    finally:
        if proc.poll() is None:
            _kill(proc)
        with _live_lock:
            _live.discard(proc)
        t.join(timeout=5)
        proc.stdout.close()
        result.seconds = time.monotonic() - started
        if log_f:
            tail = ("\n# killed after the timeout of %.0fs\n" % timeout if result.timed_out else
                    "\n# interrupted\n" if result.interrupted else
                    f"\n# stopped: {result.aborted}\n" if result.aborted else
                    f"\n# qemu exit code {result.exit_code}\n")
            log_f.write(tail)
            log_f.close()
    return result
