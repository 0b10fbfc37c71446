"""Symbols resolved over a set of modules, as the kernel resolves them: exports of the other modules of
the run (or beside a linted file) count, namespaces must be imported, GPL-only exports need a GPL
license, and the load order puts providers first. The exporters are compiled with the kernel's own
export-table layout (___ksymtab[_gpl]+SYM, __kstrtab_/__kstrtabns_ strings), by the real compilers."""
import shutil

import pytest

from kmod.lint import format_text, lint_paths
from kmod.lint.deps import provider_order, providers

from .conftest import kernel_tree, rules_of

EXPORT = r"""
#define EXPORT(sym, sec, ns) asm(".section \"__ksymtab_strings\",\"aMS\",%progbits,1\n" \
    "__kstrtab_" #sym ":\n .asciz \"" #sym "\"\n__kstrtabns_" #sym ":\n .asciz \"" ns "\"\n .previous\n" \
    ".section \"___ksymtab" sec "+" #sym "\", \"a\"\n .balign 4\n__ksymtab_" #sym ":\n" \
    " .long " #sym "- .\n .long __kstrtab_" #sym "- .\n .long __kstrtabns_" #sym "- .\n .previous\n")
"""
EXPORTER = EXPORT + r"""
int a_fn(int x) { return x + 1; }
int a_ns_fn(int x) { return x + 2; }
EXPORT(a_fn, "_gpl", "");
EXPORT(a_ns_fn, "", "A_NS");
MODINFO(name, "name=a");
int init_module(void) { return 0; }
void cleanup_module(void) {}
"""
USER = r"""
extern int %(sym)s(int);
%(imports)s
int init_module(void) { return %(sym)s(1) - 2; }
void cleanup_module(void) {}
"""
SYMVERS = ("0x11111111\t_printk\tvmlinux\tEXPORT_SYMBOL\t\n"
           "0x22222222\tusb_stor_suspend\tdrivers/usb/storage/usb-storage\tEXPORT_SYMBOL_GPL\tUSB_STORAGE\n")


def user(build, sym, imports=(), name="b", license="GPL", arch="x86_64"):
    lines = "\n".join(f'MODINFO(import_ns_{i}, "import_ns={ns}");' for i, ns in enumerate(imports))
    return build(arch, USER % {"sym": sym, "imports": lines}, name=name, license=license)


@pytest.fixture
def kernel(tmp_path):
    return kernel_tree(tmp_path, symvers=SYMVERS)


def package(tmp_path, *objs):
    """The .ko files of one package in a folder of their own, named as the kernel would name them."""
    folder = tmp_path / "pkg"
    folder.mkdir(exist_ok=True)
    out = []
    for name, obj in objs:
        shutil.copy(obj, folder / f"{name}.ko")
        out.append(folder / f"{name}.ko")
    return folder, out


def by_name(report):
    return {m.path.rsplit("/", 1)[-1]: m for m in report.modules}


def test_a_sibling_export_counts_and_the_order_puts_it_first(build, kernel, tmp_path):
    folder, (b, a) = package(tmp_path, ("b", user(build, "a_fn")), ("a", build("x86_64", EXPORTER, name="a")))
    report = lint_paths([folder], target=str(kernel), jobs=1, use_cache=False)
    mods = by_name(report)
    assert rules_of(mods["a.ko"]) == [] and rules_of(mods["b.ko"]) == []
    assert mods["b.ko"].provided == {"a_fn": str(a)} and mods["b.ko"].depends == [str(a)]
    assert report.order == [str(a), str(b)]
    text = format_text(report)
    assert f"{b}: needs a.ko loaded first (a_fn)" in text and "load order: a.ko, b.ko" in text
    # the same answer from the functions the boot test and the packages use
    assert provider_order([b, a]) == [a, b]
    assert providers([b, a])[str(b)] == {"a_fn": str(a)}


def test_a_file_linted_alone_sees_the_modules_beside_it(build, kernel, tmp_path):
    folder, (a, b) = package(tmp_path, ("a", build("x86_64", EXPORTER, name="a")), ("b", user(build, "a_fn")))
    alone = lint_paths([b], target=str(kernel), jobs=1, use_cache=False).modules[0]
    assert rules_of(alone) == [] and alone.provided == {"a_fn": str(a)}
    # moved away from its package, nobody provides the symbol: an error that says so
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    shutil.copy(b, lonely / "b.ko")
    r = lint_paths([lonely / "b.ko"], target=str(kernel), jobs=1, use_cache=False).modules[0]
    assert rules_of(r) == [("undefined-symbol", "error")]
    assert "a_fn is not exported by" in r.findings[0].message and "lint them together" in r.findings[0].message


@pytest.mark.parametrize("imports, expected", [((), [("namespace-not-imported", "error")]), (("A_NS",), [])])
def test_a_sibling_namespace_must_be_imported(build, kernel, tmp_path, imports, expected):
    folder, _ = package(tmp_path, ("a", build("x86_64", EXPORTER, name="a")),
                        ("c", user(build, "a_ns_fn", imports, name="c")))
    mods = by_name(lint_paths([folder], target=str(kernel), jobs=1, use_cache=False))
    assert rules_of(mods["c.ko"]) == expected
    if expected:
        assert "MODULE_IMPORT_NS(A_NS)" in mods["c.ko"].findings[0].message


@pytest.mark.parametrize("imports, expected", [((), [("namespace-not-imported", "error")]),
                                               (("USB_STORAGE",), [])])
def test_a_target_namespace_must_be_imported(build, kernel, tmp_path, imports, expected):
    obj = user(build, "usb_stor_suspend", imports, name="u")
    r = lint_paths([obj], target=str(kernel), jobs=1, use_cache=False).modules[0]
    assert rules_of(r) == expected
    if not expected:
        assert r.provided == {"usb_stor_suspend": "usb-storage (in-tree)"}


def test_allow_missing_namespace_imports_makes_it_a_warning(build, kernel, tmp_path):
    with open(kernel / ".config", "a") as f:
        f.write("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS=y\n")
    r = lint_paths([user(build, "usb_stor_suspend", name="u")], target=str(kernel), jobs=1, use_cache=False)
    assert rules_of(r.modules[0]) == [("namespace-not-imported", "warning")]


def test_a_gpl_only_sibling_export_needs_a_gpl_license(build, kernel, tmp_path):
    folder, _ = package(tmp_path, ("a", build("x86_64", EXPORTER, name="a")),
                        ("p", user(build, "a_fn", name="p", license="Proprietary")))
    mods = by_name(lint_paths([folder], target=str(kernel), jobs=1, use_cache=False))
    assert rules_of(mods["p.ko"]) == [("license-gpl-only-symbol", "error")]
    assert "a.ko" in mods["p.ko"].findings[0].message


def test_modules_of_another_arch_provide_nothing(build, kernel, tmp_path):
    folder, _ = package(tmp_path, ("a", build("arm64", EXPORTER, name="a")), ("b", user(build, "a_fn")))
    mods = by_name(lint_paths([folder], target=str(kernel), jobs=1, use_cache=False))
    assert ("undefined-symbol", "error") in rules_of(mods["b.ko"])


def test_a_cycle_and_a_duplicate_export(build, kernel, tmp_path):
    x = build("x86_64", EXPORT + r"""extern int y_fn(int); int x_fn(int v) { return y_fn(v); } EXPORT(x_fn, "", "");
              int a_fn(int v) { return v; } EXPORT(a_fn, "", "");""", name="x")
    y = build("x86_64", EXPORT + r"""extern int x_fn(int); int y_fn(int v) { return x_fn(v); } EXPORT(y_fn, "", "");""",
              name="y")
    folder, _ = package(tmp_path, ("x", x), ("y", y), ("a", build("x86_64", EXPORTER, name="a")))
    mods = by_name(lint_paths([folder], target=str(kernel), jobs=1, use_cache=False))
    assert ("dependency-cycle", "error") in rules_of(mods["x.ko"]) and ("dependency-cycle", "error") in rules_of(mods["y.ko"])
    dup = [f for m in mods.values() for f in m.findings if f.rule == "duplicate-export"]
    assert len(dup) == 1 and "a_fn" in dup[0].message


def test_without_a_target_the_set_still_gives_the_order(build, tmp_path):
    folder, (b, a) = package(tmp_path, ("b", user(build, "a_fn")), ("a", build("x86_64", EXPORTER, name="a")))
    report = lint_paths([folder], jobs=1, use_cache=False)
    assert report.order == [str(a), str(b)] and all(rules_of(m) == [] for m in report.modules)


def test_what_the_final_link_provides_is_no_undefined_symbol(build, arch, tmp_path):
    """Every arch's objects reference symbols the .ko link provides (__this_module; .TOC. and the
    register save helpers on ppc64): against a bare Module.symvers they are not errors."""
    obj = build(arch, """
        extern int _printk(const char *, ...);
        static int counter;
        extern void *__this_module;
        int init_module(void) { counter++; return _printk("x%d", counter) + (__this_module != 0); }
        void cleanup_module(void) {}
    """)
    symvers = tmp_path / "Module.symvers"
    symvers.write_text("0x11111111\t_printk\tvmlinux\tEXPORT_SYMBOL\t\n")
    r = lint_paths([obj], target=str(symvers), jobs=1, use_cache=False).modules[0]
    assert [f for f in r.findings if f.rule == "undefined-symbol"] == []


def test_a_module_of_the_set_replaces_the_in_tree_exporter_of_the_same_symbol(build, tmp_path):
    """Linting in-tree modules (or a rebuilt in-tree driver) against their own pin: the target's
    Module.symvers lists the export too, but the file of the set is what loads, so it gives the order."""
    tree = kernel_tree(tmp_path, symvers=SYMVERS + "0x33333333\ta_fn\tdrivers/misc/a\tEXPORT_SYMBOL_GPL\t\n")
    folder, (b, a) = package(tmp_path, ("b", user(build, "a_fn")), ("a", build("x86_64", EXPORTER, name="a")))
    report = lint_paths([folder], target=str(tree), jobs=1, use_cache=False)
    assert report.order == [str(a), str(b)]
    assert by_name(report)["b.ko"].provided == {"a_fn": str(a)}
    # away from the set, the in-tree module is named as the provider (modprobe loads it)
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    shutil.copy(b, lonely / "b.ko")
    alone = lint_paths([lonely / "b.ko"], target=str(tree), jobs=1, use_cache=False).modules[0]
    assert alone.provided == {"a_fn": "a (in-tree)"} and alone.findings == []


@pytest.mark.parametrize("user_name, expected", [("b", []), ("c", [("namespace-not-imported", "error")])])
def test_an_export_for_named_modules_only(build, kernel, tmp_path, user_name, expected):
    """EXPORT_SYMBOL_FOR_MODULES (namespace "module:NAMES", Linux >= 6.13): no import, only those modules."""
    only = build("x86_64", EXPORT + r"""int o_fn(int x) { return x; } EXPORT(o_fn, "_gpl", "module:b,x_*");""",
                 name="o")
    folder, _ = package(tmp_path, ("o", only), (user_name, user(build, "o_fn", name=user_name)))
    assert rules_of(by_name(lint_paths([folder], target=str(kernel), jobs=1, use_cache=False))[f"{user_name}.ko"]) == expected


CRC_KCRCTAB = 'static const unsigned int __crc_a_fn __attribute__((used, section("___kcrctab_gpl+a_fn"))) = %#x;'
CRC_ABSOLUTE = 'asm(".globl __crc_a_fn\\n.set __crc_a_fn, %#x");'


@pytest.mark.parametrize("form", [CRC_KCRCTAB, CRC_ABSOLUTE], ids=["kcrctab (>= 5.19)", "absolute (5.10)"])
def test_a_sibling_that_exports_another_crc_is_an_error(build, kernel, tmp_path, form):
    """Both built with MODVERSIONS: the CRC b.ko expects for a_fn (__versions) must be the one a.ko
    exports, or the loader refuses b.ko ('disagrees about version of symbol a_fn')."""
    exporter = build("x86_64", EXPORTER + form % 0x1234ABCD, name="a")
    consumer = USER % {"sym": "a_fn", "imports": ""}
    good = build("x86_64", consumer, name="b", versions={"a_fn": 0x1234ABCD, "_printk": 0x11111111})
    bad = build("x86_64", consumer, name="c", versions={"a_fn": 0xDEADBEEF, "_printk": 0x11111111})
    unversioned = build("x86_64", consumer, name="d")
    folder, (a, b, c, d) = package(tmp_path, ("a", exporter), ("b", good), ("c", bad), ("d", unversioned))
    mods = by_name(lint_paths([folder], target=str(kernel), jobs=1, use_cache=False))
    assert rules_of(mods["b.ko"]) == [] and rules_of(mods["d.ko"]) == []   # same CRC; no MODVERSIONS on one side
    assert rules_of(mods["c.ko"]) == [("crc-mismatch-sibling", "error")]
    [f] = mods["c.ko"].findings
    assert "c.ko expects CRC 0xdeadbeef for a_fn, a.ko exports 0x1234abcd" in f.message, f.message
    assert "rebuild both together" in f.message
    # an exporter without CRCs (built without MODVERSIONS) is not compared against
    other = tmp_path / "plain"
    other.mkdir()
    shutil.copy(bad, other / "c.ko")
    shutil.copy(build("x86_64", EXPORTER, name="a"), other / "a.ko")
    plain = by_name(lint_paths([other], target=str(kernel), jobs=1, use_cache=False))
    assert rules_of(plain["c.ko"]) == [] and plain["c.ko"].provided == {"a_fn": str(other / "a.ko")}


WEAK_USER = r"""
/* PowerPC's machine_is(cell): a weak reference to a platform that this kernel may not have built in */
extern struct { int (*probe)(void); } mach_cell __attribute__((weak));
extern int strong_missing(int);
int init_module(void) { return (&mach_cell ? 1 : 0) + %(call)s; }
void cleanup_module(void) {}
"""


def test_every_arch_reads_weak_references(build, arch):
    from kmod.lint.deps import facts
    from kmod.lint.elf import parse
    path = build(arch, WEAK_USER % {"call": "strong_missing(1)"}, name="w")
    f = facts(parse(path.read_bytes()), str(path))
    assert f["weak"] == ["mach_cell"] and {"mach_cell", "strong_missing"} <= set(f["needs"])


@pytest.mark.parametrize("strong", [False, True])
def test_a_weak_reference_nobody_provides_loads_as_zero(build, kernel, strong):
    """The loader resolves an unknown weak symbol to 0 (simplify_symbols()) and modpost is silent: no
    error (3154 in-tree modules of ppc64el's 6.12 had two such false errors). A strong reference next to
    it still is one."""
    src = WEAK_USER % {"call": "strong_missing(1)" if strong else "0"}
    r = lint_paths([build("x86_64", src, name="w")], target=str(kernel), jobs=1, use_cache=False).modules[0]
    undefined = [f for f in r.findings if f.rule == "undefined-symbol"]
    assert [f.message.split(" ", 1)[0] for f in undefined] == (["strong_missing"] if strong else [])


@pytest.mark.parametrize("marks", [("dkms.conf",), ("modules.order",)])
def test_a_file_linted_alone_sees_its_whole_package(build, kernel, tmp_path, marks):
    """ddcci-backlight/ddcci-backlight.ko linted on its own needs ../ddcci/ddcci.ko's exports: the package's
    root (a dkms.conf, or the modules.order of an M= build, above folders of the build) is searched too."""
    root = tmp_path / "ddcci-0.4"
    (root / "ddcci").mkdir(parents=True)
    (root / "ddcci-backlight").mkdir()
    for d in (root, root / "ddcci", root / "ddcci-backlight"):
        (d / "Makefile").write_text("obj-m := x.o\n")
    for m in marks:
        (root / m).write_text("ddcci/ddcci.o\nddcci-backlight/ddcci-backlight.o\n" if m == "modules.order" else
                              'PACKAGE_NAME="ddcci"\n')
    provider = root / "ddcci" / "ddcci.ko"
    shutil.copy(build("x86_64", EXPORTER, name="a"), provider)
    user_ko = root / "ddcci-backlight" / "ddcci-backlight.ko"
    shutil.copy(user(build, "a_fn"), user_ko)
    alone = lint_paths([user_ko], target=str(kernel), jobs=1, use_cache=False).modules[0]
    assert rules_of(alone) == [] and alone.provided == {"a_fn": str(provider)}


def test_a_folder_outside_any_build_is_not_walked_up(build, kernel, tmp_path):
    """A dist/ folder (no Makefile, no dkms.conf) is its own package: a module elsewhere above it that
    exports the symbol must not hide the error."""
    dist = tmp_path / "proj" / "dist" / "b" / "x86_64"
    dist.mkdir(parents=True)
    (tmp_path / "proj" / "Makefile").write_text("all:\n")
    shutil.copy(build("x86_64", EXPORTER, name="a"), tmp_path / "proj" / "dist" / "a.ko")
    shutil.copy(user(build, "a_fn"), dist / "b.ko")
    r = lint_paths([dist / "b.ko"], target=str(kernel), jobs=1, use_cache=False).modules[0]
    assert rules_of(r) == [("undefined-symbol", "error")]
