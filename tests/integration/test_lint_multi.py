"""A package of several modules that export symbols to each other, compiled by the real kbuild against
each pinned kernel in kmod's toolchain image, then linted against that pin: zero false errors for
the modules the kernel would load (a sibling's EXPORT_SYMBOL_GPL and EXPORT_SYMBOL_NS_GPL count, the
namespace is imported), an error for the ones it would refuse, and providers first in the load order."""
import pytest

from kmod import arch as archmod
from kmod import pins
from kmod.lint import format_text, lint_paths
from kmod.lint.deps import provider_order

pytestmark = pytest.mark.integration

def module(decls: str, ret: str, extra: str = "") -> str:
    return (f"#include <linux/module.h>\n{decls}\nstatic int __init m_init(void) {{ return {ret}; }}\n"
            "static void __exit m_exit(void) {}\nmodule_init(m_init);\nmodule_exit(m_exit);\n"
            f'MODULE_LICENSE("GPL");\n{extra}\n')


SOURCES = {
    "kmod_exporter.c": module("int kmod_x_add(int a) { return a + 1; }\nEXPORT_SYMBOL_GPL(kmod_x_add);\n"
                              "int kmod_x_ns(int a) { return a + 2; }\nEXPORT_SYMBOL_NS_GPL(kmod_x_ns, KMOD_X);", "0"),
    "kmod-user-gpl.c": module("int kmod_x_add(int a);", "kmod_x_add(1) - 2"),
    "kmod_user_ns.c": module("int kmod_x_ns(int a);", "kmod_x_ns(1) - 3", "MODULE_IMPORT_NS(KMOD_X);"),
    # what modpost refuses unless told otherwise (KBUILD_NSDEPS / KBUILD_MODPOST_WARN below): the lint
    # must refuse it too
    "kmod_user_nons.c": module("int kmod_x_ns(int a);", "kmod_x_ns(1) - 3"),
    "kmod_user_unknown.c": module("int kmod_nobody_exports_this(int a);", "kmod_nobody_exports_this(1)"),
}
GOOD = ["kmod_exporter.ko", "kmod-user-gpl.ko", "kmod_user_ns.ko"]


@pytest.fixture(scope="session")
def packages(tmp_path_factory, docker_client):
    """pin -> folder of .ko files, built for x86_64 with the real kbuild of each pin."""
    from kmod.build import images
    from kmod.build import runtime as runtimes
    rt = runtimes.get("docker")
    a = archmod.get("x86_64")
    src = tmp_path_factory.mktemp("src")
    for name, text in SOURCES.items():
        (src / name).write_text(text)
    (src / "Kbuild").write_text("obj-m := " + " ".join(n[:-2] + ".o" for n in SOURCES) + "\n")
    kos = [n[:-2] + ".ko" for n in SOURCES]
    out = {}
    try:
        for pin in pins.all_pins().values():
            pin = pins.require_locked(pin)
            ws = rt.prepare(src, [*SOURCES, "Kbuild"], tmp_path_factory.mktemp("work"))
            res = rt.run(ws, ["make", "-C", pin.kdir(a), f"M={ws.path}", *a.make_vars(images.build_arch()),
                              "KBUILD_MODPOST_WARN=1", "KBUILD_NSDEPS=1", "modules"],
                         image=images.ensure(pin), env={"HOME": "/tmp"})
            assert res.exit_code == 0, res.output[-3000:]
            dest = tmp_path_factory.mktemp(pin.name)
            assert set(rt.collect(ws, kos, dest)) == set(kos)
            rt.cleanup(ws)
            out[pin.name] = dest
    finally:
        rt.cleanup()
    return out


@pytest.mark.parametrize("pin_name", pins.names())
def test_a_multi_module_package_lints_as_the_kernel_loads_it(packages, pin_name):
    folder = packages[pin_name]
    report = lint_paths([folder], target=pin_name, use_cache=False)
    mods = {m.path.rsplit("/", 1)[-1]: m for m in report.modules}
    assert set(mods) == {n[:-2] + ".ko" for n in SOURCES}
    errors = {n: sorted(f.rule for f in m.findings if f.severity == "error") for n, m in mods.items()}
    assert errors == {"kmod_exporter.ko": [], "kmod-user-gpl.ko": [], "kmod_user_ns.ko": [],
                      "kmod_user_nons.ko": ["namespace-not-imported"],
                      "kmod_user_unknown.ko": ["undefined-symbol"]}, format_text(report)
    exporter = str(folder / "kmod_exporter.ko")
    assert mods["kmod-user-gpl.ko"].provided == {"kmod_x_add": exporter}
    assert mods["kmod_user_ns.ko"].provided == {"kmod_x_ns": exporter}
    order = [p.rsplit("/", 1)[-1] for p in report.order]
    assert order.index("kmod_exporter.ko") < min(order.index(n) for n in GOOD[1:])
    assert "kmod_nobody_exports_this" in mods["kmod_user_unknown.ko"].findings[0].message
    # one file alone: the modules beside it provide, as modprobe would load them
    alone = lint_paths([folder / "kmod-user-gpl.ko"], target=pin_name, use_cache=False).modules[0]
    assert [f for f in alone.findings if f.severity == "error"] == []
    assert provider_order([folder / n for n in reversed(GOOD)])[0] == folder / "kmod_exporter.ko"
