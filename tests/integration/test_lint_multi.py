"""A package of several modules that export symbols to each other, compiled by the real kbuild against
each pinned kernel in kmod's toolchain image, then linted against that pin: zero false errors for
the modules the kernel would load (a sibling's EXPORT_SYMBOL_GPL and EXPORT_SYMBOL_NS_GPL count, the
namespace is imported), an error for the ones it would refuse, and providers first in the load order."""
import os
import textwrap

import pytest

from kmod import arch as archmod
from kmod import pins
from kmod.lint import format_text, lint_paths
from kmod.lint.deps import provider_order

pytestmark = pytest.mark.integration

SOURCES = {
    "kmod_exporter.c": """
        #include <linux/module.h>
        int kmod_x_add(int a) { return a + 1; }
        EXPORT_SYMBOL_GPL(kmod_x_add);
        int kmod_x_ns(int a) { return a + 2; }
        EXPORT_SYMBOL_NS_GPL(kmod_x_ns, KMOD_X);
        static int __init x_init(void) { return 0; }
        static void __exit x_exit(void) {}
        module_init(x_init);
        module_exit(x_exit);
        MODULE_LICENSE("GPL");
    """,
    "kmod-user-gpl.c": """
        #include <linux/module.h>
        int kmod_x_add(int a);
        static int __init u_init(void) { return kmod_x_add(1) - 2; }
        static void __exit u_exit(void) {}
        module_init(u_init);
        module_exit(u_exit);
        MODULE_LICENSE("GPL");
    """,
    "kmod_user_ns.c": """
        #include <linux/module.h>
        int kmod_x_ns(int a);
        static int __init n_init(void) { return kmod_x_ns(1) - 3; }
        static void __exit n_exit(void) {}
        module_init(n_init);
        module_exit(n_exit);
        MODULE_LICENSE("GPL");
        MODULE_IMPORT_NS(KMOD_X);
    """,
    # what modpost refuses unless told otherwise (KBUILD_NSDEPS / KBUILD_MODPOST_WARN below): the lint
    # must refuse it too
    "kmod_user_nons.c": """
        #include <linux/module.h>
        int kmod_x_ns(int a);
        static int __init m_init(void) { return kmod_x_ns(1) - 3; }
        static void __exit m_exit(void) {}
        module_init(m_init);
        module_exit(m_exit);
        MODULE_LICENSE("GPL");
    """,
    "kmod_user_unknown.c": """
        #include <linux/module.h>
        int kmod_nobody_exports_this(int a);
        static int __init k_init(void) { return kmod_nobody_exports_this(1); }
        static void __exit k_exit(void) {}
        module_init(k_init);
        module_exit(k_exit);
        MODULE_LICENSE("GPL");
    """,
}
GOOD = ["kmod_exporter.ko", "kmod-user-gpl.ko", "kmod_user_ns.ko"]


@pytest.fixture(scope="session")
def packages(tmp_path_factory, docker_client):
    """pin -> folder of .ko files, built for x86_64 with the real kbuild of each pin."""
    from kmod.build import images
    from kmod.build import runtime as runtimes
    from kmod.build.runtime import Mount
    rt = runtimes.get("docker")
    a = archmod.get("x86_64")
    out = {}
    try:
        for pin in pins.all_pins().values():
            pin = pins.require_locked(pin)
            work = tmp_path_factory.mktemp(pin.name)
            for name, text in SOURCES.items():
                (work / name).write_text(textwrap.dedent(text))
            (work / "Kbuild").write_text("obj-m := " + " ".join(n[:-2] + ".o" for n in SOURCES) + "\n")
            image = images.ensure(pin)
            res = rt.run(["make", "-C", pin.kdir(a), "M=/kmod/build", *a.make_vars(images.build_arch()),
                          "KBUILD_MODPOST_WARN=1", "KBUILD_NSDEPS=1", "modules"],
                         image=image, mounts=[Mount(work, "/kmod/build", False)], env={"HOME": "/tmp"},
                         workdir="/", user=f"{os.getuid()}:{os.getgid()}")
            assert res.exit_code == 0, res.output[-3000:]
            out[pin.name] = work
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
