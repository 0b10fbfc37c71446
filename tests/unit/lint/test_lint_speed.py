"""What keeps a cold lint of a package-sized set at or below `objdump -d` over the same files
(bench/bench_lint.py measures it; docs/benchmarks.md): every worker the run may have is used, the code is
decoded in place, and the target's export table is read once per process."""
from kmod.lint import decode, elf, lint_paths, runner

CLEAN = """
    static int handler(struct kprobe *p, struct pt_regs *regs) { return 0; }
    static struct kprobe kp = { .symbol_name = "kernel_clone", .pre_handler = handler };
    int init_module(void) { return register_kprobe(&kp); }
    void cleanup_module(void) { unregister_kprobe(&kp); }
"""


def test_pool_workers_inherit_what_they_need_and_the_collector_leaves_it_alone(build, tmp_path, monkeypatch):
    """A forked worker made the instruction tables again (10 ms each), and a garbage collection in it wrote
    to every object of the parent it visited, copying the parent's pages: each worker of a pooled
    drivers/media/usb took twice the whole set's time in one process. The tables are made before the fork,
    and the parent's objects are frozen for the collector while the pool runs."""
    import gc
    data = build("x86_64", CLEAN).read_bytes()
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(2):      # 9 MiB each: enough for a pool of two
        (folder / f"m{i}.ko").write_bytes(data + bytes((9 << 20) - len(data)))
    seen = []
    real_fork = runner.ProcessPoolExecutor
    decode._tables.cache_clear()

    def pool(*a, **kw):
        seen.append((gc.get_freeze_count() > 0, decode._tables.cache_info().currsize))
        return real_fork(*a, **kw)
    monkeypatch.setattr(runner, "ProcessPoolExecutor", pool)
    report = lint_paths([folder], jobs=2, use_cache=False)
    assert seen == [(True, 1)]
    assert gc.get_freeze_count() == 0          # unfrozen once the pool is done
    assert len(report.modules) == 2 and report.count("error") == 0


def test_one_small_module_is_linted_without_a_pool(build, monkeypatch):
    seen = []
    real = runner._run_pool
    monkeypatch.setattr(runner, "_run_pool", lambda run, items, workers, collect: (
        seen.append(workers), real(run, items, workers, collect))[1])
    lint_paths([build("x86_64", CLEAN)], jobs=2, use_cache=False)
    assert seen == [1]


def test_code_is_decoded_in_place(build, monkeypatch):
    """cs_disasm reads the module's own bytes: no section is copied out for it."""
    e = elf.parse(build("x86_64", "int f(int x) { return x * 3; }").read_bytes())
    copies = []
    monkeypatch.setattr(elf.Elf, "section_bytes", lambda self, sec: copies.append(sec.name) or b"")
    monkeypatch.setattr(decode.ctypes, "create_string_buffer", lambda *a: copies.append("buffer"))
    assert decode.has_fp(e) is False
    assert copies == []


def test_a_pins_target_is_read_once_per_process_and_never_shared(tmp_path, monkeypatch):
    """Each lint_paths call decoded the pin's whole export table from JSON again (20 ms, a tenth of a
    package's lint); now once per process and file, while every call still gets a target of its own."""
    from kmod import arch as archmod
    from kmod import pins
    from kmod.lint import target
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))
    pin, arch = pins.get("bookworm-6.1"), archmod.get("x86_64")
    tree = tmp_path / "image"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "System.map-6.1.0-56-amd64").write_text("ffffffff81000000 T _stext\n")
    monkeypatch.setattr(target, "headers_files", lambda p, a, *flavour: (
        "0x11111111\tregister_kprobe\tvmlinux\tEXPORT_SYMBOL_GPL\t\n", "CONFIG_X86_64=y\n"))
    monkeypatch.setattr(target, "image_tree", lambda p, a, *flavour: tree)
    target.load_pin(pin, arch)
    reads = []
    real = target.json.loads
    monkeypatch.setattr(target.json, "loads", lambda b: reads.append(1) or real(b))
    one, two = target.load_pin(pin, arch), target.load_pin(pin, arch, symbols=True)
    three = target.load_pin(pin, arch, symbols=True)
    assert len(reads) == 2          # the exports file, then the symbols file: once each
    assert one is not two and one.exports is two.exports
    assert two.blacklist is not three.blacklist and two.ranges is not three.ranges
    # a changed file is read again
    cached = next(f for f in (tmp_path / "cache" / "lint" / "targets").glob("*.json") if "symbols" not in f.name)
    cached.write_text(cached.read_text() + " ")
    target.load_pin(pin, arch)
    assert len(reads) == 3


class _Counting:
    """An FP-register pattern that counts the bytes it is asked to search."""

    def __init__(self, rx):
        self.rx, self.searched = rx, 0

    def search(self, text, *a):
        self.searched += len(text)
        return self.rx.search(text, *a)

    def finditer(self, text, *a):
        self.searched += len(text)
        return self.rx.finditer(text, *a)


def test_only_operand_texts_are_searched_for_fp_registers(build, monkeypatch):
    """ppc64el, s390x and riscv64 have no gp_insns, so every instruction's operand text is read: the
    regex ran over the whole cs_insn array (248 bytes an instruction), 41-67 s for their in-tree lints."""
    from kmod import arch as archmod
    from .conftest import asm_fp
    source = "\n".join(f"int g{i}(int x) {{ return x * {i} + (x >> 3); }}" for i in range(200))
    e = elf.parse(build("ppc64el", source + f"\nvoid f(void) {{ {asm_fp('ppc64el')}; }}").read_bytes())
    insns = sum(s.size for s in e.sections if s.executable) // 4
    a = archmod.get("ppc64el")
    counting = _Counting(a.fp_registers_bytes)
    monkeypatch.setitem(a.__dict__, "fp_registers_bytes", counting)
    assert decode.has_fp(e)
    assert 0 < counting.searched < insns * 16, (counting.searched, insns)


def test_a_module_is_read_with_a_buffer_of_its_size(build, monkeypatch):
    """read_raw asked read(2) for 256 MiB (the cap) for every file: the kernel mapped and unmapped that
    much each time, four times the system time of the reads themselves."""
    import os
    from kmod.lint import files
    ko = build("x86_64", CLEAN)
    asked = []
    real = os.fdopen

    class Recording:
        def __init__(self, f):
            self.f = f

        def read(self, n):
            asked.append(n)
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(files.os, "fdopen", lambda fd, *a, **kw: Recording(real(fd, *a, **kw)))
    assert files.read_raw(ko) == ko.read_bytes()
    assert asked and max(asked) <= max(ko.stat().st_size + 1, files._STREAM)
