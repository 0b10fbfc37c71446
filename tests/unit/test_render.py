"""Rendered sources against golden files. Regenerate with KMOD_GOLDEN_RENDER=1 and review the diff."""
import os
from pathlib import Path

import jinja2
import pytest

from kmod import arch as archmod
from kmod import render, spec
from tests.conftest import need_tool

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PROJECT = spec.load(GOLDEN / "kmod.toml")
REGENERATE = os.environ.get("KMOD_GOLDEN_RENDER") == "1"


@pytest.mark.parametrize("name", sorted(PROJECT.modules))
def test_golden(name, tmp_path):
    sources = render.render(PROJECT.modules[name], tmp_path / name)
    for fname in sources.files:
        got = (tmp_path / name / fname).read_text()
        golden = GOLDEN / name / fname
        if REGENERATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(got)
        assert golden.exists(), f"no golden file {golden}; run with KMOD_GOLDEN_RENDER=1"
        assert got == golden.read_text(), f"{golden} differs; regenerate with KMOD_GOLDEN_RENDER=1 and review"


def test_portable_source_shape():
    files = render.module_files(PROJECT.modules["multi_kprobe"])
    c = files["multi_kprobe.c"]
    assert "fault_handler" not in c  # removed in 5.14
    assert "LINUX_VERSION_CODE" in c and "regs_get_kernel_argument" in c
    assert 'MODULE_LICENSE("Dual MIT/GPL")' in c and "SPDX-License-Identifier: GPL-2.0-only OR MIT" in c
    assert c.count(".pre_handler = kmod_pre") == 3 and "kmod_arg(regs, 2)" in c
    assert "module_param_cb(hits, &kmod_hits_ops, NULL, 0444)" in c
    assert files["Kbuild"].strip().endswith("obj-m := multi_kprobe.o")


def test_kretprobe_touches_only_stable_fields():
    c = render.module_files(PROJECT.modules["openat_ret"])["openat_ret.c"]
    assert "ri->data" in c and "regs_return_value(regs)" in c
    for internal in ("ri->rp", "ri->task", "ri->ret_addr", "get_kretprobe(", "ri->rph"):
        assert internal not in c


def test_render_rewrites_only_changes(tmp_path):
    m = PROJECT.modules["clone_probe"]
    first = render.render(m, tmp_path)
    c_file = tmp_path / "clone_probe.c"
    mtime = c_file.stat().st_mtime_ns
    (tmp_path / "stale.c").write_text("old")
    again = render.render(m, tmp_path)
    assert again.files == first.files and c_file.stat().st_mtime_ns == mtime
    assert not (tmp_path / "stale.c").exists()


def test_strict_undefined():
    import jinja2
    with pytest.raises(jinja2.UndefinedError):
        render.render_text("module/Kbuild.j2")


def test_c_string_escapes():
    assert render.c_string('a"b\\c\n') == '"a\\"b\\\\c\\n"'


def test_offsets_render_as_offsets(tmp_path):
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "off"\nsymbols = ["do_sys_openat2+0x4", "vfs_read+12"]\n')
    c = render.module_files(spec.load(tmp_path / "kmod.toml").modules["off"])["off.c"]
    assert '.symbol_name = "do_sys_openat2", .offset = 0x4' in c and '.symbol_name = "vfs_read", .offset = 0xc' in c


def _arch_view(source: str, config: dict[str, str]) -> str:
    """The source as one arch's kernel compiles it: every #if on a CONFIG_ symbol resolved against that
    kernel's .config by unifdef (the rest, kernel headers and version tests, left as written)."""
    import re
    import subprocess
    args = []
    for sym in sorted(set(re.findall(r"\bCONFIG_\w+", source))):
        args.append(f"-D{sym}=1" if config.get(sym) in ("y", "m") else f"-U{sym}")
    proc = subprocess.run([need_tool("unifdef"), "-b", *args], input=source, text=True,
                          capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


def _generic_cells() -> list[tuple[str, str]]:
    from kmod import pins
    return [(p.name, a.name) for p in pins.all_pins().values() if not p.base
            for a, f in p.planned() if f.is_generic and p.has(a)]


@pytest.mark.parametrize("pin_name,arch_name", _generic_cells())
@pytest.mark.parametrize("name", ["clone_probe", "openat_ret"])
def test_golden_per_arch(name, pin_name, arch_name):
    """One source for every arch; what each pinned kernel of each arch makes of it (the source's CONFIG_
    conditionals resolved with that kernel's real .config) is a golden diff of its own against the
    portable source (tests/golden/arch/ARCH/PIN/MODULE.c.diff)."""
    import difflib
    from kmod import pins
    from kmod.lint.target import _config, headers_files
    a, pin = archmod.get(arch_name), pins.get(pin_name)
    config = _config(headers_files(pin, a)[1])
    m = PROJECT.modules[name]
    source = render.module_files(m)[f"{m.name}.c"]
    view = _arch_view(source, config)
    got = "".join(difflib.unified_diff(source.splitlines(True), view.splitlines(True), f"{m.name}.c",
                                       f"{m.name}.c on {arch_name} ({pin.name})", n=1))
    golden = GOLDEN / "arch" / arch_name / pin_name / f"{m.name}.c.diff"
    if REGENERATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
    assert golden.exists(), f"no golden file {golden}; run with KMOD_GOLDEN_RENDER=1"
    assert got == golden.read_text(), f"{golden} differs; regenerate with KMOD_GOLDEN_RENDER=1 and review"
    assert "#error" not in view      # every arch has what the source needs (the argument access)
    entry = a.ftrace_entry_offset(config)
    assert f"#define KMOD_ENTRY {entry:#x}" in view if entry else "#define KMOD_ENTRY 0\n" in view


def _fresh_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    render.environment.cache_clear()
    return render.environment()


def test_a_planted_compiled_template_is_never_run(monkeypatch, tmp_path):
    """The Jinja2 bytecode in the cache is code: a file planted there (a poisoned CI cache) is compiled
    again, not run, whether it is a bare pickle-bearing bucket or signed with another key."""
    import marshal
    import pickle

    import jinja2.bccache
    env = _fresh_environment(monkeypatch, tmp_path)
    env.get_template("module/Kbuild.j2")                       # a signed file for that bucket
    folder = tmp_path / "cache" / "jinja2"
    [signed] = list(folder.iterdir())
    canary = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))
    source = (render.paths.templates() / "module" / "Kbuild.j2").read_text()
    checksum = jinja2.bccache.BytecodeCache().get_source_checksum(source)
    code = marshal.dumps(compile(f"import os; os.system('touch {canary}')", "<planted>", "exec"))
    rce_in_checksum = jinja2.bccache.bc_magic + pickle.dumps(Payload())
    rce_in_code = jinja2.bccache.bc_magic + pickle.dumps(checksum, 2) + code
    for planted in (rce_in_checksum, rce_in_code, os.urandom(32) + rce_in_code, signed.read_bytes()[:32] + rce_in_code):
        signed.write_bytes(planted)
        render.environment.cache_clear()
        text = render.environment().get_template("module/Kbuild.j2").render(m=type("M", (), {"name": "m1"})())
        assert "m1.o" in text and not canary.exists()
    render.environment.cache_clear()


def test_compiled_templates_are_signed_and_reused(monkeypatch, tmp_path):
    env = _fresh_environment(monkeypatch, tmp_path)
    env.get_template("module/Kbuild.j2")
    [signed] = list((tmp_path / "cache" / "jinja2").iterdir())
    key = (tmp_path / "config" / "kmodkit" / "cache.key")
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    compiled = []
    monkeypatch.setattr(jinja2.Environment, "compile", lambda self, *a, **k: compiled.append(a) or None)
    render.environment.cache_clear()
    render.environment().get_template("module/Kbuild.j2")      # from the signed file: nothing compiled
    assert compiled == [] and signed.exists()
    render.environment.cache_clear()


def test_a_key_others_can_read_is_not_trusted(monkeypatch, tmp_path):
    _fresh_environment(monkeypatch, tmp_path)
    key = tmp_path / "config" / "kmodkit" / "cache.key"
    key.chmod(0o644)
    assert render.code_key() is None
    render.environment.cache_clear()
