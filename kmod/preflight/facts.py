"""What a host says about itself, read in one SSH round trip by templates/preflight/facts.sh.j2 (read-only;
the probed symbols' kallsyms lines are kallsyms.py's, once per kernel build), and the kernel target the
lint's rules check a module against, built from it."""
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache

from .. import paths, render
from ..lint.target import KernelTarget, parse_symvers, parse_system_map, vermagic_from_config

MARKER = "@@KMOD-PREFLIGHT@@"


@cache
def rules() -> dict:
    return tomllib.loads((paths.rules() / "preflight.toml").read_text())


def script(imports: list[str]) -> str:
    """The facts script for these imported symbols (validated names already; quoted again by the
    template). The probed symbols' kallsyms lines are kmod/preflight/kallsyms.py's."""
    r = rules()
    return render.render_text("preflight/facts.sh.j2", marker=MARKER, config=r["config"],
                              dkms_certificate=r["dkms_certificate"], dkms_signing_key=r["dkms_signing_key"],
                              imports=sorted(set(imports)))


@dataclass
class Facts:
    release: str = ""
    machine: str = ""
    version: str = ""                   # uname -v
    uid: int | None = None
    privilege: str = "none"             # root, sudo (passwordless) or none
    os: dict = field(default_factory=dict)
    sysctl: dict = field(default_factory=dict)
    lockdown: str | None = None         # none, integrity, confidentiality; None: not readable
    sig_enforce: bool | None = None     # None: the kernel has no module signing
    cmdline: str = ""
    efi: bool = False
    secure_boot: bool | None = None     # None: unknown
    config: dict = field(default_factory=dict)   # CONFIG_X -> value ("n" for "is not set")
    config_source: str = ""
    kallsyms: list[str] = field(default_factory=list)
    kallsyms_readable: bool = False
    kallsyms_first: str = ""            # its first line: which symbol starts the image, and where (KASLR)
    kallsyms_from: str = ""             # "": read on this host; else the host of the same build that read them
    kernel_notes: str = ""              # cksum of /sys/kernel/notes (the build ID is one of its notes)
    blacklist: str | None = None        # the debugfs blacklist text; None when it could not be read
    blacklist_status: str = ""          # why it could not: needs-root, no-debugfs, unreadable
    headers: bool = False
    kdir: str = ""
    symvers_source: str = ""
    symvers: str = ""
    dkms: str | None = None             # dkms version ("3.0.10")
    dkms_certificate: str = ""
    dkms_signing_key: str = ""
    mok: str = ""                       # mokutil --test-key's answer, no-mokutil, no-key
    pkgtool: str | None = None          # dpkg or rpm
    vermagic: str = ""
    free_kb: int | None = None

    @property
    def addresses_visible(self) -> bool:
        """kallsyms shows real addresses only to root (and to nobody under kptr_restrict=2)."""
        return any(not set(ln.split(" ", 1)[0]) <= {"0"} for ln in self.kallsyms if ln.strip())

    @property
    def debian_version(self) -> str:
        """The Debian package version of the running kernel ("Debian 6.1.192-2" in uname -v), or ""."""
        m = re.search(r"\bDebian (\S+)", self.version)
        return m.group(1) if m else ""

    def config_on(self, key: str) -> bool | None:
        """True/False when the config says, None when no config was readable."""
        if not self.config_source:
            return None
        return self.config.get(key, "n") in ("y", "m")

    def target(self, name: str, arch_name: str | None) -> KernelTarget:
        """The host's kernel as the lint rules see one: vermagic, the exports the module imports (from
        the host's Module.symvers), the probed symbols from its /proc/kallsyms and its kprobe blacklist."""
        t = KernelTarget(name=f"{name} ({self.release})", arch=arch_name, release=self.release,
                         symbols_from=f"{name}'s /proc/kallsyms",
                         how_to_get_symbols="/proc/kallsyms was not readable on the host")
        t.vermagic = self.vermagic or (vermagic_from_config(self.release, self.config) if self.config else None)
        if self.symvers_source:
            t.exports = parse_symvers(self.symvers)
        if self.kallsyms_readable:
            parse_system_map("\n".join(self.kallsyms), t)
            if not self.addresses_visible:
                t.ranges = []   # every address reads 0: ranges would match anything
        else:
            t.text, t.symbols_from = None, None
        if self.blacklist is not None:
            from ..boot.probemap import parse_blacklist
            ranges = parse_blacklist(self.blacklist)
            t.blacklist |= {name for _, _, name in ranges}
            if self.addresses_visible:
                t.ranges += [(a, b, f"the kprobe blacklist ({n})") for a, b, n in ranges]
        return t


def sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(MARKER + " "):
            current = line[len(MARKER) + 1:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _first(lines: list[str]) -> str:
    return next((ln.strip() for ln in lines if ln.strip()), "")


def parse(text: str) -> Facts:
    s = sections(text)
    if "end" not in s:
        from ..errors import InfraError
        raise InfraError("the host's answer ended early (no end mark): the facts script did not finish",
                         "is /bin/sh a POSIX shell on it?")
    f = Facts()
    uname = s.get("uname", [])
    f.release, f.machine, f.version = (uname + ["", "", ""])[:3]
    ident = _first(s.get("id", [])).split()
    if ident and ident[0].isdigit():
        f.uid = int(ident[0])
        f.privilege = ident[1] if len(ident) > 1 else "none"
    for line in s.get("os-release", []):
        k, sep, v = line.partition("=")
        if sep:
            f.os[k.strip()] = v.strip().strip('"')
    for line in s.get("sysctl", []):
        k, _, v = line.partition("=")
        f.sysctl[k] = v.strip()
    lock = _first(s.get("lockdown", []))
    m = re.search(r"\[(\w+)\]", lock)
    f.lockdown = m.group(1) if m else None
    enforce = _first(s.get("sig_enforce", []))
    f.sig_enforce = {"Y": True, "N": False}.get(enforce[:1]) if enforce else None
    f.cmdline = _first(s.get("cmdline", []))
    f.efi = _first(s.get("efi", [])) == "efi"
    sb = " ".join(s.get("secureboot", [])).lower()
    if "validation is disabled in shim" in sb:
        f.secure_boot = False   # shim tells the kernel so (MokSBStateRT): it enforces nothing for it
    elif "secureboot enabled" in sb:
        f.secure_boot = True
    elif "secureboot disabled" in sb or "doesn't support secure boot" in sb or not f.efi:
        f.secure_boot = False
    elif sb.startswith("efivar"):
        f.secure_boot = sb.split()[-1] == "1"   # the variable's data byte after 4 attribute bytes
    for line in s.get("config", []):
        if line.startswith("source "):
            f.config_source = line[len("source "):].strip()
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            f.config[line[2:].split()[0]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            f.config[k] = v.strip('"')
    # the probed symbols' lines come from kmod/preflight/kallsyms.py (once per build); a host's answer
    # recorded before that carries them itself
    ks = s.get("kallsyms", [])
    f.kallsyms_readable = "status ok" in ks
    f.kallsyms = [ln for ln in ks if ln and not ln.startswith("status ")]
    first = _first(s.get("kallsyms-first", []))
    f.kallsyms_first = "" if first.startswith("status ") else first
    f.kernel_notes = _first(s.get("kernel-notes", []))
    bl = s.get("blacklist", [])
    status = next((ln for ln in bl if ln.startswith("status ")), "")
    if status:
        f.blacklist_status = status.split(None, 1)[1]
    else:
        f.blacklist = "\n".join(bl)
    hdr = _first(s.get("headers", [])).split()
    f.headers = bool(hdr) and hdr[0] == "yes"
    f.kdir = hdr[1] if f.headers and len(hdr) > 1 else ""
    sv = s.get("symvers", [])
    if sv and sv[0].startswith("source "):
        f.symvers_source = sv[0][len("source "):].strip()
        f.symvers = "\n".join(sv[1:])
    dk = _first(s.get("dkms", []))
    m = re.search(r"(\d+(?:\.\d+)+\S*)", dk)
    f.dkms = m.group(1) if m else None
    cert = _first(s.get("dkms-certificate", []))
    f.dkms_certificate = (cert.split("=", 1)[1].strip('"') if "=" in cert else cert) or rules()["dkms_certificate"]
    f.dkms_signing_key = _first(s.get("dkms-key", [])) or rules()["dkms_signing_key"]
    f.mok = _first(s.get("mok", []))
    f.pkgtool = _first(s.get("pkgtool", [])) or None
    f.vermagic = _first(s.get("vermagic", []))
    df = ([ln for ln in s.get("df", []) if ln.strip()] or [""])[-1].split()
    if len(df) >= 4 and df[3].isdigit():
        f.free_kb = int(df[3])
    return f
