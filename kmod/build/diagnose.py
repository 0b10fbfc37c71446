"""Compiler and modpost output -> the few lines that matter and what they mean in plain words."""
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .. import paths

# Lines worth showing from a long make log: compiler errors, modpost errors, make's own failures.
RELEVANT = re.compile(r"(error:|ERROR:|warning: .*(?:float|SSE|GPL)|undefined!|\*\*\*)")
MAX_LINES = 8


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    advice: str
    line: str


@cache
def causes() -> list[dict]:
    return tomllib.loads((paths.rules() / "diagnostics.toml").read_text())["cause"]


def relevant_lines(log: str) -> list[str]:
    lines = [ln.rstrip() for ln in log.splitlines() if RELEVANT.search(ln)]
    return lines[:MAX_LINES]


def diagnose(log: str) -> list[Diagnosis]:
    found, seen = [], set()
    for line in log.splitlines():
        for c in causes():
            m = re.search(c["pattern"], line)
            if m:
                advice = c["advice"].replace("\n", " ")
                for i, g in enumerate(m.groups(), 1):
                    advice = advice.replace(f"{{{i}}}", g or "")
                key = (c["id"], advice)
                if key not in seen:
                    seen.add(key)
                    found.append(Diagnosis(c["id"], advice, line.strip()))
    return found


@cache
def advice_table() -> dict[str, str]:
    return tomllib.loads((paths.rules() / "diagnostics.toml").read_text())["advice"]


def advise(cause: str, line: str = "", **values) -> Diagnosis:
    text = advice_table()[cause]
    for part in re.findall(r"\{(\w+)\}", text):
        text = text.replace("{" + part + "}", str(values.get(part, "")))
    return Diagnosis(cause, " ".join(text.split()), line)


# make -C /lib/modules/RELEASE/build: the release a Makefile decided to build for
LIB_MODULES_RE = re.compile(r"/lib/modules/([^/\s'\"]+)/")
UNAME_VAR_RE = re.compile(r"^\s*(?:export\s+)?(\w+)\s*[:?+]?=\s*\$\(shell\s+uname\s+-r\s*\)", re.M)
INCLUDE_AT_RE = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):\d+: fatal error: (?P<h>[^:]+): No such file")
SEARCH_LIMIT = 5000  # files looked at when searching for a module's own header near its source


def for_dkms_build(r, cell) -> list[Diagnosis]:
    """What the dkms-like build of a hand-written module (kmod.build.dkmsbuild.Result) says went wrong."""
    m = cell.module
    release = cell.pin.release(cell.arch) if cell.pin else ""
    out = [advise("dkms-conf", e, what=e) for e in r.errors if e.startswith("dkms.conf")]
    out += [advise("script-not-executable", w, what=w) for w in r.warnings if "not executable" in w]
    log = r.log
    if r.host_release and r.host_release != release:
        out += _uname(r, m, release, log)
    if r.missing:
        found = ", ".join(r.found) if r.found else "no .ko anywhere"
        if not r.found:
            what = advise("ko-missing-none", make=r.make).advice
        elif r.conf.get("BUILT_MODULE_NAME"):
            what = advise("ko-missing-set-conf").advice
        else:
            folders = sorted({f.rsplit("/", 1)[0] if "/" in f else "." for f in r.found})
            what = advise("ko-missing-set-spec", folder=_common_folder(folders)).advice
        out.append(advise("ko-missing", r.missing[0], expected=", ".join(r.missing), found=found,
                          what_to_set=what))
    explained = set()
    for h in r.headers:
        d = _header(h, m, cell, log)
        if d:
            out.append(d)
            explained.add(h.split()[0])
    # then the line patterns, but not "moved or removed" for a header explained better above
    return out + [d for d in diagnose(log)
                  if not (d.cause == "missing-header" and any(f" {h}:" in d.line for h in explained))]


def _common_folder(folders: list[str]) -> str:
    if len(folders) == 1:
        return folders[0]
    parts = [f.split("/") for f in folders]
    common = []
    for group in zip(*parts):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return "/".join(common) or "."


def _uname(r, m, release: str, log: str) -> list[Diagnosis]:
    hits = [ln for ln in log.splitlines() if f"/lib/modules/{r.host_release}/" in ln]
    if not hits:
        return []
    where, variable = "", "KVER"
    if m.source:
        for path in sorted(m.source.rglob("*")):
            if path.is_file() and not path.is_symlink() and (path.name.startswith(("Makefile", "Kbuild"))):
                found = UNAME_VAR_RE.search(path.read_text(errors="replace"))
                if found:
                    variable = found.group(1)
                    where = f"{path.relative_to(m.source)} sets {variable} from $(shell uname -r)"
                    break
    fix = (f'make_vars = {{ {variable} = "${{kernelver}}" }} in the spec (a dkms.conf of its own: add '
           f'{variable}=$kernelver to MAKE[0])')
    return [advise("release-from-uname", hits[0].strip(), host_release=r.host_release, release=release,
                   where=where or "make went to /lib/modules/" + r.host_release, fix=fix)]


def _header(line: str, m, cell, log: str) -> Diagnosis | None:
    from .. import arch as archmod
    words = line.split()
    header = words[0]
    this = next((w[5:] for w in words if w.startswith("this=")), "")
    arches = sorted({w[5:] for w in words if w.startswith("arch=")})
    generic = "generic" in words
    shown = next((ln.strip() for ln in log.splitlines() if f"fatal error: {header}:" in ln), "")
    if arches and not generic and this not in arches:
        names = [a.name for s in arches for a in archmod.by_srcarch(s)]
        return advise("header-arch-specific", shown, header=header, this=this,
                      where=", ".join(f"arch/{a}" for a in arches),
                      arches=", ".join(f'"{n}"' for n in names) or '"..."')
    if arches or generic or not m.source:
        return None  # the kernel has it for this arch: the line-pattern rules explain the rest
    quoted = _quoted_include(shown, header, m)
    near = _find_near(m.source, header)
    if near is not None:
        rel_in = near.relative_to(m.source) if near.is_relative_to(m.source) else None
        if rel_in is not None:
            folder = str(rel_in.parent)[: -len(str(Path(header).parent))].rstrip("/") or "."
            return advise("header-not-on-path", shown, header=header, found=rel_in, folder=folder)
        parent = _common_parent(m.source, near)
        return advise("header-outside-source", shown, header=header, found=near, source=m.source, parent=parent,
                      build_dir=m.source.relative_to(parent))
    if quoted:
        return advise("header-own-missing", shown, header=header)
    return None


def _quoted_include(shown: str, header: str, m) -> bool:
    """Whether the failing line includes the header with quotes (a module's own header)."""
    found = INCLUDE_AT_RE.match(shown)
    if not found:
        return False
    rel = re.sub(r"^.*?/build/", "", found.group("file"))
    path = m.source / rel
    try:
        text = path.read_text(errors="replace").splitlines()[int(found.group("line")) - 1]
    except (OSError, IndexError):
        return False
    return f'"{header}"' in text


def _find_near(source, header: str):
    """The header in the source folder or the folders around it (up to two levels up)."""
    source = Path(source)
    seen = 0
    for base in (source, source.parent, source.parent.parent):
        for path in base.rglob(Path(header).name):
            seen += 1
            if seen > SEARCH_LIMIT:
                return None
            if str(path).endswith("/" + header) and path.is_file():
                return path
    return None


def _common_parent(a, b):
    a, b = Path(a), Path(b)
    for p in (a, *a.parents):
        if b.is_relative_to(p):
            return p
    return Path("/")
