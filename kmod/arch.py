"""Architectures, loaded from toolchains/arch/*.toml (one file each; adding an arch is a data change).

This is the only code that knows an arch fact: names, triplets, ELF machines, registers, relocation
types, guard functions, disassembler modes, QEMU settings all come from the files, through the objects
made here (tests/unit/test_arch_facts.py scans kmod/ for any of them written elsewhere).
"""
import platform
import re
from dataclasses import dataclass, field
from functools import cache, cached_property

from . import datafile, paths


@dataclass(frozen=True)
class ControlRule:
    """How the decoder reads one kind of control-flow instruction (toolchains/arch/*.toml, [lint] control)."""
    insn: re.Pattern          # capstone's instruction name (full match)
    kind: str                 # call, tail, branch, end
    text: re.Pattern | None   # the printed instruction, when the name alone does not say


@dataclass(frozen=True)
class Lint:
    """What the linter needs to read this arch's machine code."""
    decoder: str                          # "capstone" or "a64" (kmod/lint/decode.py)
    cs_arch: str                          # capstone constant names, resolved when capstone is loaded
    cs_mode: tuple[str, ...]
    fpu_begin: tuple[str, ...]
    fpu_end: tuple[str, ...]
    fpu_owner_begin: tuple[str, ...]      # calls after which the module owns the FP registers anyway
    fpu_advice: tuple[str, str]           # what messages tell people to call around FP code
    fpu_flow: str                         # "paths" (each control-flow path) or "function" (whole functions)
    softfloat: tuple[str, ...]            # libgcc helper globs of this arch
    fp_insns: str                         # capstone names of FP instructions that name no FP register
    fp_registers: str                     # an FP/vector register in the operand text
    targets: str                          # "absolute" or "relative" branch targets in the operand text
    control: tuple[ControlRule, ...]
    call_relocation_before: int           # a call's relocation may sit this many bytes before it
    undecoded: dict                       # what to do with bytes capstone cannot decode
    gp_insns: frozenset[str]              # instructions known to touch no FP register (a speed-up)
    linker_provided: tuple[str, ...] = ()  # undefined symbols the final .ko link provides (globs)
    indirect_thunks: tuple[str, ...] = ()  # calls to these are calls through a pointer (globs)


@dataclass(frozen=True)
class Arch:
    name: str
    aliases: tuple[str, ...]
    debian_arch: str
    uname_machine: str
    gnu_triplet: str
    make_arch: str
    srcarch: str                          # arch/<srcarch>/ in the kernel tree (x86 for x86_64)
    kernel_flavour: str
    image_package: str                    # "linux-image-{release}-unsigned"
    image_file: str                       # /boot/<image_file>-RELEASE
    kernel_config: tuple[str, ...]
    vermagic_words: tuple[tuple[str, str], ...]   # (word, CONFIG_ condition or "")
    elf_machine: str
    elf_number: int
    big_endian: bool
    call_relocations: dict = field(hash=False, compare=False)    # r_type -> name
    pcrel_relocations: frozenset = frozenset()
    pcrel_adjust: int = 0
    absolute_relocations: dict = field(default_factory=dict, hash=False, compare=False)   # r_type -> bytes
    argument_registers: tuple[tuple[str, ...], ...] = ()
    return_registers: tuple[str, ...] = ()
    set_immediate: frozenset = frozenset()
    zero_idiom: frozenset = frozenset()
    set_high: tuple[frozenset, int] | None = None  # (instructions, shift) of a constant's high part
    add_low: frozenset = frozenset()
    lint: Lint | None = field(default=None, hash=False, compare=False)
    ftrace_entry_bytes: int = 0
    ftrace_entry_when: str = ""
    ftrace_entry_unless: str = ""
    argument_expression: str = ""              # C for argument n where regs_get_kernel_argument() is not to be had
    argument_api_links: bool = True            # False: the kernel has it, but a module cannot link it
    qemu: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name --arch accepts for this arch."""
        return (self.name, *self.aliases, self.debian_arch, self.uname_machine)

    @property
    def byte_order(self) -> str:
        return "big" if self.big_endian else "little"

    def cross_compile(self, build_debian_arch: str) -> str:
        """CROSS_COMPILE for a build running on `build_debian_arch` ("" when native)."""
        return "" if build_debian_arch == self.debian_arch else f"{self.gnu_triplet}-"

    def make_vars(self, build_debian_arch: str) -> list[str]:
        return [f"ARCH={self.make_arch}", f"CROSS_COMPILE={self.cross_compile(build_debian_arch)}"]

    def image_package_name(self, release: str) -> str:
        return self.image_package.format(release=release)

    def is_call_relocation(self, r_type: int) -> bool:
        return r_type in self.call_relocations

    def reloc_adjust(self, r_type: int) -> int:
        """What to add to symbol + addend of a relocation of this type to get the target's offset."""
        return self.pcrel_adjust if r_type in self.pcrel_relocations else 0

    def argument(self, n: int) -> tuple[str, ...]:
        """The register names of argument n (1-based)."""
        return self.argument_registers[n - 1] if 0 < n <= len(self.argument_registers) else ()

    def matches_config(self, config: dict[str, str]) -> bool:
        """Is a kernel .config (CONFIG_X -> value) one of this arch?"""
        return all(config.get(c) == "y" for c in self.kernel_config)

    def vermagic_suffix(self, config: dict[str, str]) -> list[str]:
        """MODULE_ARCH_VERMAGIC words, for a kernel with this config."""
        return [word for word, cond in self.vermagic_words if not cond or config.get(cond) == "y"]

    def ftrace_entry_offset(self, config: dict[str, str] | None = None) -> int:
        """Bytes a kprobe at a function's entry must skip on this arch (0: the entry itself works).
        With a config, only when the kernel has the condition; without one, where it may apply."""
        if not self.ftrace_entry_bytes:
            return 0
        if config is None:
            return self.ftrace_entry_bytes
        refused = (not self.ftrace_entry_when or config.get(self.ftrace_entry_when) == "y") and \
            not (self.ftrace_entry_unless and config.get(self.ftrace_entry_unless) == "y")
        return self.ftrace_entry_bytes if refused else 0

    @cached_property
    def fp_registers_bytes(self) -> re.Pattern:
        return re.compile(self.lint.fp_registers.encode())


def _lint(d: dict) -> Lint:
    dis = d["disassembler"]
    control = tuple(ControlRule(re.compile(r["insn"]), r["kind"], re.compile(r["text"]) if "text" in r else None)
                    for r in d.get("control", ()))
    for r in control:
        if r.kind not in ("call", "tail", "branch", "end"):
            raise ValueError(f"control kind {r.kind!r}")
    advice = tuple(d["fpu_advice"])
    if len(advice) != 2:
        raise ValueError("fpu_advice needs the begin and the end")
    return Lint(decoder=d["decoder"], cs_arch=dis["arch"], cs_mode=tuple(dis["mode"]),
                fpu_begin=tuple(d["fpu_begin"]), fpu_end=tuple(d["fpu_end"]),
                fpu_owner_begin=tuple(d.get("fpu_owner_begin", ())), fpu_advice=advice,
                fpu_flow=d.get("fpu_flow", "paths"), softfloat=tuple(d.get("softfloat", ())),
                fp_insns=d.get("fp_insns", ""), fp_registers=d["fp_registers"],
                targets=d.get("targets", "absolute"), control=control,
                call_relocation_before=d.get("call_relocation_before", 0), undecoded=d.get("undecoded", {}),
                gp_insns=frozenset(d.get("gp_insns", ())),
                linker_provided=tuple(d.get("linker_provided", ())),
                indirect_thunks=tuple(d.get("indirect_thunks", ())))


def _build(d: dict, _path) -> Arch:
    k, e, abi, kp = d["kernel"], d["elf"], d["abi"], d.get("kprobes", {})
    if e["endian"] not in ("little", "big"):
        raise ValueError(f"endian {e['endian']!r}")
    high = abi.get("set_high")
    return Arch(
        name=d["name"], aliases=tuple(d.get("aliases", ())), debian_arch=d["debian_arch"],
        uname_machine=d["uname_machine"], gnu_triplet=d["gnu_triplet"],
        make_arch=k["make_arch"], srcarch=k["srcarch"], kernel_flavour=k["flavour"], image_package=k["image_package"],
        image_file=k["image_file"], kernel_config=tuple(k["config"]),
        vermagic_words=tuple((v["word"], v.get("config", "")) for v in k["vermagic"]),
        elf_machine=e["machine"], elf_number=e["number"], big_endian=e["endian"] == "big",
        call_relocations={v: n for n, v in e["call_relocations"].items()},
        pcrel_relocations=frozenset(e["pcrel_relocations"].values()), pcrel_adjust=e["pcrel_adjust"],
        absolute_relocations={**{v: 4 for v in e["absolute32"].values()}, **{v: 8 for v in e["absolute64"].values()}},
        argument_registers=tuple(tuple(r) for r in abi["arguments"]), return_registers=tuple(abi["return_value"]),
        set_immediate=frozenset(abi.get("set_immediate", ())), zero_idiom=frozenset(abi.get("zero_idiom", ())),
        set_high=(frozenset(high["insn"]), high["shift"]) if high else None, add_low=frozenset(abi.get("add_low", ())),
        lint=_lint(d["lint"]), ftrace_entry_bytes=kp.get("ftrace_entry_bytes", 0),
        ftrace_entry_when=kp.get("ftrace_entry_when", ""), ftrace_entry_unless=kp.get("ftrace_entry_unless", ""),
        argument_expression=kp.get("argument_expression", ""),
        argument_api_links=kp.get("argument_api_links", True),
        qemu=d["qemu"])


@cache
def all_arches() -> dict[str, Arch]:
    return datafile.load_folder(paths.toolchains() / "arch", _build)


def names() -> list[str]:
    return list(all_arches())


def get(name: str) -> Arch:
    return datafile.lookup(all_arches(), name, "architecture", lambda a: a.names)


@cache
def _by_number() -> dict[int, Arch]:
    return {a.elf_number: a for a in all_arches().values()}


def by_srcarch(srcarch: str) -> list[Arch]:
    return [a for a in all_arches().values() if a.srcarch == srcarch]


def by_elf_machine(number: int) -> Arch | None:
    """The arch of an ELF file's e_machine, None when kmod supports no such arch."""
    return _by_number().get(number)


def by_config(config: dict[str, str]) -> Arch | None:
    """The arch a kernel .config is for."""
    return next((a for a in all_arches().values() if a.matches_config(config)), None)


def select(spec: str | None) -> list[Arch]:
    """`all`, one name, or a comma list."""
    return datafile.select(all_arches(), spec, get, "--arch")


def host() -> Arch | None:
    """This machine's arch, when kmod knows it."""
    machine = platform.machine()
    return next((a for a in all_arches().values() if machine in a.names), None)


def host_debian_arch() -> str:
    a = host()
    return a.debian_arch if a else platform.machine()
