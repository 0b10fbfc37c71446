"""Every arch fact lives once, in toolchains/arch/*.toml (read by kmod/arch.py): no code under kmod/ writes
one again. Scans every Python file's string constants (docstrings aside: they may name an arch to
explain), identifiers and large numbers for each arch's names, triplet, flavour, ELF machine, CONFIG
symbols, vermagic words, registers, relocation names and numbers, guard functions, capstone modes and
QEMU settings."""
import ast
import re
from pathlib import Path

import pytest

from kmod import arch as archmod
from tests.conftest import ROOT

LOADER = ROOT / "kmod" / "arch.py"
# arch-independent words that appear in the arch files as values too
GENERIC = {"host", "virt", "max", "default", "-bios", "relocatable"}


def facts() -> tuple[set[str], set[str], set[int]]:
    """(words, whole strings, numbers) no code outside the loader may write."""
    words, whole, numbers = set(), set(), set()
    for a in archmod.all_arches().values():
        words |= {a.name, *a.aliases, a.debian_arch, a.uname_machine, a.make_arch, a.kernel_flavour,
                  a.elf_machine, *a.kernel_config, *(w for w, _ in a.vermagic_words),
                  *(r for regs in a.argument_registers for r in regs), *a.return_registers,
                  *a.lint.fpu_begin, *a.lint.fpu_end, *a.lint.fpu_owner_begin, a.lint.cs_arch, *a.lint.cs_mode,
                  *a.call_relocations.values()}
        whole |= {a.gnu_triplet, a.image_package, a.lint.fp_registers, a.lint.fp_insns,
                  *(str(a.qemu[k]) for k in ("binary", "machine", "cpu", "console")),
                  *(str(x) for x in a.qemu.get("extra_args", ()))}
        numbers |= {a.elf_number, *a.call_relocations, *a.pcrel_relocations}
    whole -= GENERIC
    return {w for w in words if w} - GENERIC, {w for w in whole if w}, {n for n in numbers if n >= 100}


def docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def violations(path: Path, words: set[str], whole: set[str], numbers: set[int]) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and id(node) not in skip:
            v = node.value
            if isinstance(v, str):
                found = (set(re.findall(r"%?[A-Za-z_][\w]*", v)) & words) | {w for w in whole if w in v}
                out += [f"{where}: {w!r} in a string" for w in sorted(found)]
            elif isinstance(v, int) and not isinstance(v, bool) and v in numbers:
                out.append(f"{where}: the number {v}")
        elif isinstance(node, ast.Name) and node.id in words:
            out.append(f"{where}: identifier {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in words:
            out.append(f"{where}: attribute .{node.attr}")
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        if re.fullmatch(r"(R|EM|CS_ARCH|CS_MODE)_[A-Z0-9_]+", name):
            out.append(f"{where}: {name} (an ELF/capstone constant belongs in the arch data)")
    return out


def test_no_arch_fact_is_written_in_kmod():
    words, whole, numbers = facts()
    assert {"aarch64", "CONFIG_ARM64", "kernel_neon_begin", "rdi", "R_AARCH64_CALL26", "ppc64le"} <= words
    found = []
    for path in sorted((ROOT / "kmod").rglob("*.py")):
        if path != LOADER:
            found += violations(path, words, whole, numbers)
    assert not found, "arch facts outside toolchains/arch/*.toml:\n" + "\n".join(found)


@pytest.mark.parametrize("snippet,expected", [
    ('x = "aarch64"', "'aarch64' in a string"),
    ('x = f"{a}-linux-gnu" if m == "EM_X86_64" else ""', "'EM_X86_64' in a string"),
    ("x = capstone.CS_ARCH_X86", "CS_ARCH_X86"),
    ("if r.type == 283: pass", "the number 283"),
    ('regs = ("%r2", "x0")', "'%r2' in a string"),
])
def test_the_scan_sees_facts(tmp_path, snippet, expected):
    """The scan itself: each kind of fact is caught (so a passing scan means something)."""
    p = tmp_path / "probe.py"
    p.write_text(f'"""a docstring may say aarch64"""\n{snippet}\n')
    found = violations(p, *facts())
    assert any(expected in f for f in found), found
    assert not any("docstring" in f for f in found)
