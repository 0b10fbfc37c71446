"""dkms.conf and the DKMS source tree /usr/src/NAME-VERSION/ (dkms.conf, the rendered sources, a Makefile).

dkms reads dkms.conf in three passes (docs/packaging.md, "Escaping"): bash sources
the file, an unquoted `eval echo` re-emits every value inside double quotes, and bash sources that
again. A value therefore has to survive two double-quoted evaluations and one word split + glob. We
escape `\\ " $ \\`` for both passes, let through only references to the variables dkms defines for a
dkms.conf (${kernelver} and friends), and refuse what cannot survive the middle pass (glob characters,
runs of whitespace, control characters) instead of guessing.
"""
import re
from dataclasses import dataclass
from pathlib import Path

from .. import arch as archmod
from .. import nofollow, render
from ..errors import UserError
from ..schema import parse
from ..spec import Module, Packaging, Project

SRC_PREFIX = "usr/src"
# Variables dkms sets before it sources dkms.conf; a directive may refer to them as ${name}.
DKMS_VARIABLES = ("kernelver", "arch", "kernel_source_dir", "dkms_tree", "source_tree", "module",
                  "module_version")
VAR_RE = re.compile(r"\$\{(" + "|".join(DKMS_VARIABLES) + r")\}")
UNSAFE_RE = re.compile(r"[*?\[\]\x00-\x1f\x7f]|\s\s")
# Oldest dkms that understands each directive we may write (Debian versions, as dh_dkms bumps them).
DKMS_MIN = {"BUILD_EXCLUSIVE_CONFIG": "3.0.3-4~", "BUILD_EXCLUSIVE_KERNEL_MIN": "3.0.11",
            "BUILD_EXCLUSIVE_KERNEL_MAX": "3.0.11"}
DKMS_BASELINE = "2.1.0.0"  # /usr/lib/dkms/common.postinst
PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]{1,200}$")


@dataclass(frozen=True)
class Signing:
    """Paths ON THE TARGET MACHINE of the MOK key and certificate dkms signs with. Only paths are
    written anywhere; the key's content is never read."""
    key: str
    cert: str

    @classmethod
    def from_flags(cls, key: str, cert: str) -> "Signing | None":
        if not key and not cert:
            return None
        if not (key and cert):
            raise UserError("--sign-key and --sign-cert go together",
                            "give both: the paths of the MOK key and certificate on the target machine")
        for flag, value in (("--sign-key", key), ("--sign-cert", cert)):
            if not PATH_RE.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
                raise UserError(f"{flag} {value!r} is not a plain absolute path",
                                "use an absolute path of letters, digits and . _ / + - (it names the file "
                                "on the target machine; the file is never copied)")
        return cls(key, cert)


# A [package.MODULE] table of kmod.toml (its keys, and the dkms.conf directive each becomes, are
# declared with the rest of the spec's schema).
Options = Packaging


def dkms_quote(value: str, what: str = "value") -> str:
    """A dkms.conf value, double-quoted, that arrives at dkms exactly as written (see module doc)."""
    if not isinstance(value, str) or UNSAFE_RE.search(value) or value != value.strip():
        raise UserError(f"{what} {value!r} cannot be written to dkms.conf safely",
                        "dkms re-reads values through an unquoted echo: no * ? [ ], control characters, "
                        "tabs, double spaces or leading/trailing spaces; put complex logic in a script")
    out, pos = [], 0
    for m in VAR_RE.finditer(value):
        out.append(_escape_twice(value[pos:m.start()]))
        out.append(m.group(0))  # expanded by the first pass to a value dkms made (a release, a path)
        pos = m.end()
    out.append(_escape_twice(value[pos:]))
    return '"' + "".join(out) + '"'


def _escape_twice(text: str) -> str:
    once = re.sub(r'([\\"$`])', r"\\\1", text)
    return re.sub(r'([\\"$`])', r"\\\1", once)


def options_for(project: Project, module: Module) -> Options:
    return checked(module.name, project.packaging.get(module.name) or Options())


def parse_options(name: str, raw: dict) -> Options:
    return checked(name, Options(**parse(Options, raw, f"[package.{name}]")))


def checked(name: str, opts: Options) -> Options:
    """Refuse now, before anything is written, a value dkms would not read back as written."""
    for directive, value in opts.directives.items():
        dkms_quote(value, f"[package.{name}] {directive}")
    return opts


def exclusive_arch(module: Module) -> str:
    """dkms matches BUILD_EXCLUSIVE_ARCH against `uname -m` (the arch data's uname_machine)."""
    if not module.arches:
        return ""
    machines = sorted({archmod.get(a).uname_machine for a in module.arches})
    return "^(" + "|".join(re.escape(m) for m in machines) + ")$"


def own_makefile(module: Module, files: dict[str, bytes]) -> bool:
    """True when we add our Makefile: to a templated module. A hand-written source is built as shipped
    (dkms's default make runs kbuild on it when it has only a Kbuild)."""
    return not module.source and "Makefile" not in files


def make_command(module: Module) -> str:
    """MAKE[0] of a hand-written module, from its spec's make_vars, make_target and build_dir; kmod's
    build runs this same dkms.conf. "" leaves dkms's default (kbuild on the whole source)."""
    make_vars = " ".join(f"{k}={v}" for k, v in module.make_vars)
    sub = module.build_dir
    if module.make_target:
        return " ".join(p for p in ("make", f"-C {sub}" if sub else "", make_vars, module.make_target) if p)
    if make_vars or sub:
        where = "${dkms_tree}/${module}/${module_version}/build" + (f"/{sub}" if sub else "")
        return " ".join(p for p in ("make -C ${kernel_source_dir}", f"M={where}", make_vars) if p)
    return ""


def module_directives(module: Module, kos: list[dict] | None) -> list[tuple[str, str]]:
    """BUILT_MODULE_NAME[i], BUILT_MODULE_LOCATION[i] and DEST_MODULE_LOCATION[i] of each module.
    A templated module is one NAME.ko; a hand-written one has what its builds made (`kos`, from the
    manifest), or none at all in the dkms.conf kmod's own build reads (modules.order names them)."""
    if not module.source:
        kos = [{"name": module.name, "location": ""}]
    pairs = []
    for i, k in enumerate(kos or []):
        pairs.append((f"BUILT_MODULE_NAME[{i}]", dkms_quote(k["name"])))
        if k["location"]:
            pairs.append((f"BUILT_MODULE_LOCATION[{i}]", dkms_quote(k["location"])))
        pairs.append((f"DEST_MODULE_LOCATION[{i}]", '"/updates/dkms"'))
    return pairs


def uses_kprobes(module: Module, kos: list[dict] | None) -> bool:
    """A templated module always does; a hand-written one if a built .ko calls the kprobe API."""
    return not module.source or any(k.get("kprobes") for k in kos or [])


def conf_directives(module: Module, opts: Options, files: dict[str, bytes],
                    kos: list[dict] | None = None) -> list[tuple[str, str]]:
    """(directive, already-quoted value) in the order they are written."""
    pairs = [("PACKAGE_NAME", f'"{module.package_name}"'), ("PACKAGE_VERSION", f'"{module.version}"'),
             *module_directives(module, kos), ("AUTOINSTALL", '"yes"')]
    if uses_kprobes(module, kos) and (kos is not None or not module.source):
        pairs.append(("BUILD_EXCLUSIVE_CONFIG", '"CONFIG_KPROBES"'))
    arch_re = exclusive_arch(module)
    if arch_re:
        # Our own regex: ^ ( | ) $ only, no glob characters; quoted once is enough, twice is harmless.
        pairs.append(("BUILD_EXCLUSIVE_ARCH", '"' + _escape_twice(arch_re) + '"'))
    directives = dict(opts.directives)
    if module.source and make_command(module):
        directives["MAKE[0]"] = make_command(module)
    elif "MAKE[0]" not in directives and own_makefile(module, files):
        # dkms prefixes "make" with -jN KERNELRELEASE=<the kernel it builds for>; our Makefile needs both.
        directives["MAKE[0]"] = "make KDIR=${kernel_source_dir}"
    for key in ("MAKE[0]", "PRE_BUILD", "POST_BUILD", "BUILD_EXCLUSIVE_KERNEL", "BUILD_EXCLUSIVE_KERNEL_MIN",
                "BUILD_EXCLUSIVE_KERNEL_MAX"):
        if key in directives:
            pairs.append((key, dkms_quote(directives[key], key)))
    return pairs


def dkms_dependency(pairs: list[tuple[str, str]]) -> str:
    """The oldest dkms (Debian version) that understands every directive written."""
    from ..archive.debversion import compare
    need = DKMS_BASELINE
    for key, _ in pairs:
        v = DKMS_MIN.get(key)
        if v and compare(v, need) > 0:
            need = v
    return need


def dkms_conf(module: Module, opts: Options, files: dict[str, bytes], kos: list[dict] | None = None) -> str:
    return render.render_text("package/dkms.conf.j2", m=module, pairs=conf_directives(module, opts, files, kos))


def framework_conf(signing: Signing) -> str:
    return render.render_text("package/framework.conf.j2", key=dkms_quote(signing.key, "--sign-key"),
                              cert=dkms_quote(signing.cert, "--sign-cert"))


def source_tree(module: Module, opts: Options, files: dict[str, bytes],
                kos: list[dict] | None = None) -> dict[str, bytes]:
    """Relative path below /usr/src/NAME-VERSION -> content. A source with a dkms.conf of its own keeps
    it: the builds read it the way dkms does (kmod.build.dkmsbuild), so it is what they proved."""
    tree = dict(files)
    if module.source is not None and "dkms.conf" in files:
        return dict(sorted(tree.items()))
    if own_makefile(module, files):
        tree["Makefile"] = render.render_text("package/Makefile.j2", m=module).encode()
    tree["dkms.conf"] = dkms_conf(module, opts, files, kos).encode()
    return dict(sorted(tree.items()))


def read_sources(src_dir: Path, names) -> dict[str, bytes]:
    """The rendered sources, read through no link (kmod.nofollow): a payload holds only regular files."""
    return {n: nofollow.read_bytes(Path(src_dir), n, "source file") for n in sorted(names)}
