"""Rules against a real pin (bookworm-6.1): vermagic, exports and CRCs from its linux-headers package,
probe targets from the booted kernel's symbols when `invoke probe-map` has cached them. Fails in CI
when the packages cannot be downloaded, skips locally."""
import pytest

from kmod import pins
from kmod.errors import KmodError
from kmod.lint import lint_paths
from kmod.lint.target import TargetSpec
from tests.conftest import need
from tests.unit.lint.conftest import build, have  # noqa: F401 - the fixture is used by name

PIN = "bookworm-6.1"
SOURCE = """
    static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
    static struct kprobe kp = { .symbol_name = "%s", .pre_handler = handler };
    int init_module(void) { _printk("x"); return register_kprobe(&kp); }
    void cleanup_module(void) { unregister_kprobe(&kp); }
"""


@pytest.fixture(scope="module")
def target():
    from kmod import arch as archmod
    from kmod.boot import probemap
    try:
        for a in ("x86_64", "arm64"):  # the booted kernel's own kallsyms: boots QEMU once per arch, cached
            if probemap.load(pins.get(PIN), archmod.get(a)) is None:
                probemap.make(pins.get(PIN), archmod.get(a), timeout=180)
        spec = TargetSpec(PIN)
        spec.prepare(["x86_64", "arm64"])
    except KmodError as e:
        need(False, f"the {PIN} packages ({e.line()})")
    return spec


def rules(report):
    return sorted((f.rule, f.severity) for f in report.modules[0].findings)


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_clean_module_against_its_pin(build, target, arch_name):  # noqa: F811
    need(have(arch_name), f"a compiler for {arch_name}")
    obj = build(arch_name, SOURCE % "kernel_clone")
    assert rules(lint_paths([obj], target=PIN, jobs=1, use_cache=False)) == []


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_old_probe_target_gets_the_new_name(build, target, arch_name):  # noqa: F811
    need(have(arch_name), f"a compiler for {arch_name}")
    report = lint_paths([build(arch_name, SOURCE % "_do_fork")], target=PIN, jobs=1, use_cache=False)
    assert target.with_symbols(arch_name).text is not None
    assert rules(report) == [("probe-target-missing", "error")]
    assert "kernel_clone" in report.modules[0].findings[0].message


def test_wrong_vermagic_and_unknown_symbol(build, target):  # noqa: F811
    obj = build("x86_64", SOURCE % "kernel_clone" + "extern void no_such_export(void);\n"
                "void f(void) { no_such_export(); }", vermagic=False)
    report = lint_paths([obj], target=PIN, jobs=1, use_cache=False)
    assert rules(report) == [("undefined-symbol", "error"), ("vermagic-mismatch", "error")]


def test_gpl_data_file_matches_the_pins():
    """rules/lint/gpl_only_symbols.txt is what gplonly.py makes from the current lock."""
    from kmod.lint import gplonly, ruledata
    try:
        names, _ = gplonly.collect()
    except KmodError as e:
        need(False, f"the pinned headers packages ({e.line()})")
    assert set(names) == set(ruledata.gpl_only_default()), "run `python -m kmod.lint.gplonly` and commit"
    assert all(p.locked for p in pins.all_pins().values())


def test_probe_target_verdict_does_not_depend_on_the_cache(build, tmp_path):  # noqa: F811
    """A cache without the pin's probe map: without QEMU the check is skipped as a warning that says
    why; with QEMU the lint boots the pin once, makes the map and checks (a missing target is an
    error); the next run answers from the map without booting. Packages and unpacked kernels come from
    the shared cache (content-addressed, verified on use); the probe map and lint results do not."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from kmod import paths
    from tests.conftest import ROOT
    need(have("arm64"), "a compiler for arm64")
    need(shutil.which("qemu-system-aarch64") is not None, "qemu-system-aarch64 (toolchains/arch/arm64.toml [qemu] package)")
    shared = paths.cache_dir()
    private = tmp_path / "cache"
    (private / "boot").mkdir(parents=True)
    for sub in ("debs", "boot/kernels", "boot/busybox", "lint/trees"):
        (shared / sub).mkdir(parents=True, exist_ok=True)
        (private / sub).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(shared / sub, private / sub)
    obj = build("arm64", SOURCE % "_do_fork")
    tools = tmp_path / "bin"        # a PATH with everything the lint runs, but no QEMU
    tools.mkdir()
    for t in ("dpkg-deb", "tar", "xz", "zstd", "gzip"):
        if shutil.which(t):
            os.symlink(shutil.which(t), tools / t)

    def lint(path_env):
        env = {**os.environ, "KMOD_CACHE": str(private), "PYTHONPATH": str(ROOT), "PATH": path_env}
        p = subprocess.run([sys.executable, "-m", "kmod.lint", str(obj), "--target", PIN, "--format", "json"],
                           capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode in (0, 2), p.stderr
        return [(f["rule"], f["severity"], f["message"]) for f in json.loads(p.stdout)["modules"][0]["findings"]], p.stderr

    no_qemu, _ = lint(str(tools))
    assert [(r, s) for r, s, _ in no_qemu] == [("probe-targets-unchecked", "warning")]
    assert "qemu-system-aarch64 is not installed" in no_qemu[0][2]
    booted, err = lint(os.environ["PATH"])
    assert "booting bookworm-6.1/arm64 once" in err
    assert [(r, s) for r, s, _ in booted] == [("probe-target-missing", "error")] and "kernel_clone" in booted[0][2]
    again, err = lint(os.environ["PATH"])
    assert again == booted and "booting" not in err
