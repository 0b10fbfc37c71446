"""--install: prove a module on the host itself. Copy its DKMS package (.deb or .rpm, by the host's
package manager), install it (dkms builds the module there), run the boot test's steps (load, kprobes
listed, trigger, hit counters, unload, taint) and judge the kernel log with kmod/boot/verdict.py's own
rules; then remove the package unless --keep.

Whatever happens (a failed step, a lost connection, Ctrl-C), the package is removed again before the
host is let go, and so are dkms's signing key and certificate when this install made them (dkms makes
them on its first build on a host); when that cannot be done, the host is named as needing attention,
with what is left."""
import shlex
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import render
from ..boot import initramfs
from ..boot import verdict as bootverdict
from .facts import Facts
from .ssh import HostError, Session
from .verdict import FAIL, PASS, WARN, ModuleInfo

DPKG_ENV = "DEBIAN_FRONTEND=noninteractive"


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived: stop after the current step, clean up."""


@dataclass
class Trial:
    module: str
    package: str = ""
    status: str = ""          # pass or fail (the module on this host); "" when it did not get that far
    reason: str = ""
    step: str = ""
    hits: list[int] | None = None
    excerpt: list[str] = field(default_factory=list)
    cleanup: str = ""         # removed, kept, or what is left on the host
    log: list[str] = field(default_factory=list)    # the host's kernel log from the run mark on

    def record(self) -> dict:
        return {"module": self.module, "package": self.package, "verdict": self.status, "reason": self.reason,
                "step": self.step, "hits": self.hits, "excerpt": self.excerpt, "cleanup": self.cleanup}


def package_format(f: Facts) -> str:
    return {"dpkg": "deb", "rpm": "rpm"}.get(f.pkgtool or "", "")


def as_root(f: Facts, command: str) -> str:
    if f.privilege == "root":
        return command
    if f.privilege == "sudo":
        return "sudo -n sh -c " + shlex.quote(command)
    raise HostError("--install needs root or passwordless sudo on the host",
                    "log in as root, or allow `sudo -n` for this user")


def trial_script(module, probes: list[str], run_mark: str) -> str:
    trigger = module.trigger or initramfs.default_trigger(module.symbols)
    return render.render_text("preflight/trial.sh.j2", marker=initramfs.MARKER, run_mark=run_mark,
                              module=module.name, symbols=probes, trigger=trigger)


def kernel_log(stdout: str, run_mark: str) -> list[str]:
    """The kernel log from this run's mark on; the script's own echo when the log has no mark (a host
    that drops /dev/kmsg writes: printk_devkmsg=off)."""
    own, _, log = stdout.partition(f"{run_mark}-KERNEL-LOG")
    lines = log.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.rstrip().endswith(run_mark)), None)
    if start is None:
        return [ln for ln in own.splitlines() if ln.strip()]
    return lines[start:]


@dataclass
class Installer:
    """One module on one host; cleanup() is safe to call at any point and more than once."""
    session: Session
    facts: Facts
    info: ModuleInfo
    package_path: Path
    package_name: str
    keep: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    remote_dir: str = ""
    installed: bool = False
    # dkms's signing key and certificate that were not there before the install: its first build on a
    # host makes them (and nothing removes them), so cleanup does, unless --keep keeps what they signed
    keys_absent: list[str] = field(default_factory=list)
    keys_made: list[str] = field(default_factory=list)     # of those, what the install made
    keys_left: list[str] = field(default_factory=list)     # of those, what cleanup could not remove

    def check(self) -> None:
        if self.cancel.is_set():
            raise Interrupted()

    def sh(self, command: str, timeout: float | None = None):
        return self.session.run(as_root(self.facts, command), timeout)

    def run(self, on_step=lambda s: None) -> Trial:
        m = self.info.module
        t = Trial(m.name, self.package_name)
        present = self.present()   # asked now, right before anything changes
        if present:
            t.status, t.reason, t.cleanup = FAIL, f"{present} already there: not touched", "untouched"
            return t
        on_step("copying the package")
        # The login user's own temporary folder: SFTP writes as that user, root only reads from it.
        made = self.session.run("mktemp -d /tmp/kmod-preflight.XXXXXX", 30)
        if not made.ok:
            raise HostError(f"cannot make a temporary folder: {made.stderr.strip()[:200]}")
        self.remote_dir = made.stdout.strip()
        remote = f"{self.remote_dir}/{self.package_path.name}"
        self.session.put(self.package_path, remote)
        self.check()
        keys = [k for k in (self.facts.dkms_signing_key, self.facts.dkms_certificate) if k]
        there = set(self.existing(keys))
        self.keys_absent = [k for k in keys if k not in there]
        on_step("installing (dkms builds the module on the host)")
        self.installed = True   # from here on, cleanup removes the package whatever happened
        if package_format(self.facts) == "deb":
            res = self.sh(f"{DPKG_ENV} dpkg -i {shlex.quote(remote)} 2>&1")
        else:
            res = self.sh(f"rpm -i {shlex.quote(remote)} 2>&1")
        if not res.ok:
            t.status, t.step = FAIL, "install"
            t.reason = f"installing {self.package_path.name} failed (dkms could not build it there)"
            t.excerpt = self._dkms_log(res.stdout)
            return t
        self.check()
        on_step("loading, triggering, unloading")
        probes = sorted(self.info.probed)
        mark = f"KMODPREFLIGHT-RUN-{uuid.uuid4().hex[:12]}"
        res = self.sh(trial_script(m, probes, mark))
        lines = kernel_log(res.stdout, mark)
        from ..lint.callgraph import PROBE_REGISTRATION
        v = bootverdict.judge(lines, [(p.symbol, p.offset) for p in m.probes], m.name,
                              exit_code=res.exit_code, needs_hits=not m.source,
                              uses_kprobes=bool(PROBE_REGISTRATION & self.info.imports))
        t.log = lines
        t.hits, t.step, t.excerpt = v.hits, v.step, v.excerpt
        if v.status == bootverdict.PASS:
            t.status = PASS
            t.reason = (f"installed with dkms, loaded, probes fired (hits {','.join(map(str, v.hits or []))}), "
                        f"unloaded; no oops, warning or new taint")
        elif v.status == bootverdict.UNPROVEN:
            t.status = WARN   # loaded and unloaded cleanly, but nothing proved the probes fired
            t.reason = f"on the host: {v.reason}"
        else:
            t.status = FAIL
            t.reason = f"on the host, at {v.step}: {v.reason}"
        return t

    def query(self) -> str:
        """A command that prints "loaded" when the module is loaded, and the package's state."""
        pkg = shlex.quote(self.package_name)
        state = (f"dpkg-query -W -f='${{db:Status-Abbrev}} ${{Version}}' {pkg}" if package_format(self.facts) == "deb"
                 else f"rpm -q --qf 'ii %{{VERSION}}-%{{RELEASE}}' {pkg}")
        return f"test -d /sys/module/{self.info.module.name} && echo loaded; {state} 2>/dev/null; true"

    def present(self) -> str:
        """What of this module is on the host already ("" when nothing): a package or a loaded module."""
        out = self.session.run(self.query(), 60).stdout
        found = []
        if "loaded" in out.split():
            found.append(f"a module {self.info.module.name} is loaded")
        state = out.replace("loaded", "").split()
        if state and state[0].startswith("i") and "not" not in state:
            found.append(f"{self.package_name} {state[-1]} is installed")
        return " and ".join(found)

    def existing(self, paths: list[str]) -> list[str]:
        """Which of these files are on the host (as root: dkms's key is root's alone)."""
        if not paths:
            return []
        test = "; ".join(f"[ -e {shlex.quote(p)} ] && echo {shlex.quote(p)}" for p in paths)
        out = self.sh(f"{test}; true", 30).stdout.splitlines()
        return [p for p in paths if p in out]

    def _dkms_log(self, output: str) -> list[str]:
        name, version = self.info.module.package_name, self.info.module.version
        log = self.sh(f"tail -n 15 /var/lib/dkms/{shlex.quote(name)}/{shlex.quote(version)}/build/make.log 2>/dev/null",
                      30)
        return (output.strip().splitlines()[-10:] + log.stdout.strip().splitlines())[-25:]

    def cleanup(self) -> str:
        """Put the host back as it was: unload, remove the package, remove the temporary folder.
        Returns "removed", "kept" or what is left (then the host needs attention)."""
        m = self.info.module
        left = []
        if self.installed and not self.keep:
            self.sh(f"modprobe -r {shlex.quote(m.name)} 2>/dev/null; true", 60)
            if package_format(self.facts) == "deb":
                self.sh(f"{DPKG_ENV} dpkg -P {shlex.quote(self.package_name)} 2>&1", 300)
            else:
                self.sh(f"rpm -e {shlex.quote(self.package_name)} 2>&1", 300)
            probe = self.sh(self.query(), 60)
            if "loaded" in probe.stdout.split():
                left.append(f"module {m.name} still loaded")
            state = probe.stdout.replace("loaded", "").split()
            if state and not state[0].startswith(("un", "pn")) and "not" not in state:
                left.append(f"package {self.package_name} still installed ({state[0]})")
            self.keys_made = self.existing(self.keys_absent)
            if self.keys_made and not left:   # the key goes after what it signed, never before
                # regular files only: never follow a link the host put there meanwhile
                self.sh("; ".join(f"[ -f {q} ] && [ ! -L {q} ] && rm -f {q}" for q in map(shlex.quote, self.keys_made))
                        + "; true", 60)
                self.keys_left = self.existing(self.keys_made)
            elif self.keys_made:
                self.keys_left = list(self.keys_made)
            if self.keys_left:
                left.append(f"dkms's signing key made by this install is still there ({', '.join(self.keys_left)})")
        elif self.installed:   # --keep: the key stays with what it signed
            self.keys_made = self.existing(self.keys_absent)
        if self.remote_dir:
            self.session.run(f"rm -rf {shlex.quote(self.remote_dir)}", 60)
        if left:
            return "; ".join(left)
        return "kept (--keep)" if self.installed and self.keep else ("removed" if self.installed else "nothing installed")
