"""Every arch fact lives once, in toolchains/arch/*.toml (read by kmod/arch.py), and every flavour fact in
toolchains/flavours/*.toml (read by kmod/flavour.py): no code under kmod/ and no template writes one again.

Python files: every string constant (docstrings aside: they may name an arch to explain), identifier and
large number is checked against each arch's names, triplet, srcarch, kernel flavour, ELF machine, CONFIG
symbols, vermagic words, registers, relocation names and numbers, guard functions, capstone modes and QEMU
settings, and each flavour's name, release words and common headers. Small numbers are everywhere (1, 2,
4 are counts and sizes too), so they are caught where they are facts: compared with, or looked up by, an
ELF machine or a relocation type (`e_machine == 62`, `r_type in (2, 4)`, `{183: ...}[machine]`).
Templates (templates/**/*.j2): their text, against the same names."""
import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmod import arch as archmod
from kmod import flavour as flavourmod
from kmod import paths
from tests.conftest import ROOT

LOADERS = {ROOT / "kmod" / "arch.py", ROOT / "kmod" / "flavour.py"}
# arch-independent words that appear in the arch files as values too
GENERIC = {"host", "virt", "max", "default", "-bios", "relocatable"}
# Names whose value is an ELF machine or a relocation type: an integer beside one is an arch fact.
MACHINE_LIKE = re.compile(r"(?i)(^|_)(e_machine|machine|elf_number|r_type|r_info_type|rtype|reloc\w*type)$")


def _relocations(data: dict) -> dict[str, int]:
    """Every relocation an arch file names (calls, pc-relative, absolute), name -> number."""
    e = data["elf"]
    return {**e["call_relocations"], **e["pcrel_relocations"], **e["absolute32"], **e["absolute64"]}


@dataclass(frozen=True)
class Facts:
    words: set[str]            # names: in strings, identifiers, attributes
    whole: set[str]            # strings found anywhere inside a string
    numbers: set[int]          # large enough to mean nothing else
    strings_only: set[str]     # names that are facts in strings only (a variable may be called `rt`)
    affixes: re.Pattern        # parts of a release or package name: "rt-", "-common"


def facts() -> Facts:
    """What no code outside the loaders may write."""
    words, whole, numbers = set(), set(), set()
    flavours = flavourmod.all_flavours().values()
    for a in archmod.all_arches().values():
        relocs = _relocations(tomllib.loads((paths.toolchains() / "arch" / f"{a.name}.toml").read_text()))
        words |= {a.name, *a.aliases, a.debian_arch, a.uname_machine, a.make_arch, a.srcarch, a.kernel_flavour,
                  a.elf_machine, *a.kernel_config, *(w for w, _ in a.vermagic_words),
                  *(r for regs in a.argument_registers for r in regs), *a.return_registers,
                  *a.lint.fpu_begin, *a.lint.fpu_end, *a.lint.fpu_owner_begin, a.lint.cs_arch, *a.lint.cs_mode,
                  *relocs}
        whole |= {a.gnu_triplet, a.image_package, a.lint.fp_registers, a.lint.fp_insns,
                  *(str(a.qemu[k]) for k in ("binary", "machine", "cpu", "console")),
                  *(str(x) for x in a.qemu.get("extra_args", ()))}
        whole |= {f.kernel_flavour(a) for f in flavours if not f.is_generic and f.applies_to(a)}  # rt-amd64
        numbers |= {a.elf_number, *relocs.values()}
    whole |= {w for f in flavours for w in f.boot_append}
    # A release word's head ("rt-" of rt-{arch}) at the start of a string or after a non-word character
    # (`startswith("rt-")`, not "start-"); a common-headers package's tail ("-common-rt" of
    # linux-headers-{abi}-common-rt) at the start of a string or right after an ABI (not "headers-common").
    heads = {f.release.split("{", 1)[0] for f in flavours} - {""}
    tails = {f.common_headers.split("{abi}", 1)[-1] for f in flavours} - {""}
    affixes = "|".join([*(rf"(?<![\w-]){re.escape(h)}(?!\w)" for h in sorted(heads)),
                        *(rf"(?:^|(?<=[}}\d])){re.escape(t)}(?![\w-])" for t in sorted(tails))]) or "(?!)"
    whole -= GENERIC
    return Facts({w for w in words if w} - GENERIC, {w for w in whole if w}, {n for n in numbers if n >= 100},
                 {f.name for f in flavours if not f.is_generic}, re.compile(affixes))


def docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _name(node: ast.AST) -> str:
    """What an expression is called: x, a.x, d["x"], d.get("x"), int(x)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if isinstance(node, ast.Call) and node.args:
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            return _name(ast.Subscript(value=node.func.value, slice=node.args[0]))
        return _name(node.args[0])
    return ""


def _ints(node: ast.AST) -> list[int]:
    """The integers an operand writes: 62, (2, 4), {10, 11}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for e in node.elts for v in _ints(e)]
    return []


def _machine_numbers(node: ast.AST) -> list[tuple[str, list[int]]]:
    """(name, integers) where integers are compared with, or index a table by, a machine-like name."""
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        names = [n for n in map(_name, operands) if MACHINE_LIKE.search(n)]
        ints = [v for o in operands for v in _ints(o)]
        return [(names[0], ints)] if names and ints else []
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict) and MACHINE_LIKE.search(_name(node.slice)):
        ints = [v for k in node.value.keys if k is not None for v in _ints(k)]
        return [(_name(node.slice), ints)] if ints else []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
            and isinstance(node.func.value, ast.Dict) and node.args and MACHINE_LIKE.search(_name(node.args[0])):
        ints = [v for k in node.func.value.keys if k is not None for v in _ints(k)]
        return [(_name(node.args[0]), ints)] if ints else []
    return []


def _in_text(text: str, f: Facts) -> set[str]:
    return (set(re.findall(r"%?[A-Za-z_][\w]*", text)) & (f.words | f.strings_only)) | \
        {w for w in f.whole if w in text} | {m.group(0) for m in f.affixes.finditer(text)}


def violations(path: Path, f: Facts) -> list[str]:
    words, numbers = f.words, f.numbers
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and id(node) not in skip:
            v = node.value
            if isinstance(v, str):
                out += [f"{where}: {w!r} in a string" for w in sorted(_in_text(v, f))]
            elif isinstance(v, int) and not isinstance(v, bool) and v in numbers:
                out.append(f"{where}: the number {v}")
        elif isinstance(node, ast.Name) and node.id in words:
            out.append(f"{where}: identifier {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in words:
            out.append(f"{where}: attribute .{node.attr}")
        for name, ints in _machine_numbers(node):
            out.append(f"{where}: {name} against the number(s) {', '.join(map(str, ints))} (an ELF machine or "
                       f"relocation type belongs in the arch data)")
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        if re.fullmatch(r"(R|EM|CS_ARCH|CS_MODE)_[A-Z0-9_]+", name):
            out.append(f"{where}: {name} (an ELF/capstone constant belongs in the arch data)")
    return out


def template_violations(path: Path, f: Facts, root: Path = ROOT) -> list[str]:
    """A template's text, line by line ({# comments #} aside: they may name an arch to explain)."""
    text = re.sub(r"\{#.*?#\}", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S)
    return [f"{path.relative_to(root)}:{n}: {w!r}" for n, line in enumerate(text.splitlines(), 1)
            for w in sorted(_in_text(line, f))]


def test_no_arch_fact_is_written_in_kmod():
    f = facts()
    assert {"aarch64", "CONFIG_ARM64", "kernel_neon_begin", "rdi", "R_AARCH64_CALL26", "ppc64le", "x86",
            "R_X86_64_64", "R_390_32"} <= f.words
    assert {"rt-amd64", "cloud-arm64"} <= f.whole and {"rt", "cloud"} <= f.strings_only
    found = []
    for path in sorted((ROOT / "kmod").rglob("*.py")):
        if path not in LOADERS:
            found += violations(path, f)
    assert not found, "arch or flavour facts outside toolchains/:\n" + "\n".join(found)


def test_no_arch_fact_is_written_in_a_template():
    """The module source is one for every arch (regs_get_kernel_argument(), the arch's expression from its
    data), the packages name arches from the data, the boot /init knows none."""
    f = facts()
    found = [v for path in sorted((ROOT / "templates").rglob("*.j2")) for v in template_violations(path, f)]
    assert not found, "arch or flavour facts in templates:\n" + "\n".join(found)


def test_the_lint_rules_summaries_name_no_arch():
    """A rule's summary (SARIF, docs) holds for every arch; what differs per arch is in the arch files."""
    found = template_violations(ROOT / "rules" / "lint" / "rules.toml", facts())
    assert not found, "arch facts in rules/lint/rules.toml:\n" + "\n".join(found)


@pytest.mark.parametrize("snippet,expected", [
    ('x = "aarch64"', "'aarch64' in a string"),
    ('x = f"{a}-linux-gnu" if m == "EM_X86_64" else ""', "'EM_X86_64' in a string"),
    ("x = capstone.CS_ARCH_X86", "CS_ARCH_X86"),
    ("if r.type == 283: pass", "the number 283"),
    ('regs = ("%r2", "x0")', "'%r2' in a string"),
    ('d = f"arch/x86/include"', "'x86' in a string"),
    ('n = "R_390_64"', "'R_390_64' in a string"),
    ("if e_machine == 62: pass", "e_machine against the number(s) 62"),
    ("if elf.header.e_machine != 21: pass", "e_machine against the number(s) 21"),
    ('if h["e_machine"] == 22: pass', "e_machine against the number(s) 22"),
    ("if r_type == 4: pass", "r_type against the number(s) 4"),
    ('ok = rel["r_info_type"] in (2, 4)', "r_info_type against the number(s) 2, 4"),
    ('ok = rel.entry.get("r_info_type") in {10, 11}', "r_info_type against the number(s) 10, 11"),
    ("size = {1: 8, 10: 4}[r_type]", "r_type against the number(s) 1, 10"),
    ("size = {1: 8}.get(rtype, 0)", "rtype against the number(s) 1"),
    ('common = "-common-rt" if f.startswith("rt-") else ""', "'-common-rt' in a string"),
    ('pkg = f"linux-headers-{abi}-common"', "'-common' in a string"),
    ('rt = f.startswith("rt-")', "'rt-' in a string"),
    ('pkg = f"linux-image-{abi}-cloud-amd64"', "'cloud-amd64' in a string"),
    ('if flavour == "rt": pass', "'rt' in a string"),
])
def test_the_scan_sees_facts(tmp_path, snippet, expected):
    """The scan itself: each kind of fact is caught (so a passing scan means something)."""
    p = tmp_path / "probe.py"
    p.write_text(f'"""a docstring may say aarch64"""\n{snippet}\n')
    found = violations(p, facts())
    assert any(expected in f for f in found), found
    assert not any("docstring" in f for f in found)


@pytest.mark.parametrize("snippet", [
    "if len(x) == 4: pass",
    "if count == 62: pass",
    'x = "start-up sort-order"',
    'if kind == 2: pass',
    'roles = ("headers-common", "kbuild")',
    "rt = runtime()",
])
def test_the_scan_leaves_plain_numbers_and_words_alone(tmp_path, snippet):
    p = tmp_path / "probe.py"
    p.write_text(snippet + "\n")
    assert violations(p, facts()) == []


def test_the_template_scan_sees_facts(tmp_path):
    p = tmp_path / "t.j2"
    p.write_text('{# a comment may say aarch64 #}\nBUILD_EXCLUSIVE_ARCH="x86_64|aarch64"\n#ifdef CONFIG_ARM64\n')
    found = template_violations(p, facts(), root=tmp_path)
    assert found == ["t.j2:2: 'aarch64'", "t.j2:2: 'x86_64'", "t.j2:3: 'CONFIG_ARM64'"], found
