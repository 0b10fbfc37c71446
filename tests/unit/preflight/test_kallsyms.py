"""The probed symbols' kallsyms lines, read once per kernel build and run: the other hosts of the build
take them moved by their own KASLR slide (or with every address 0 when they cannot see addresses), and
a probe target that the build does not have in vmlinux sends every host to read its own, so that it
still fails on each host that lacks it."""
import dataclasses
import threading

from kmod.preflight import kallsyms, kernels
from kmod.preflight.ssh import Result
from kmod.preflight.verdict import FAIL, PASS, judge
from tests.unit.preflight.conftest import recorded

MARK = "@@KMOD-PREFLIGHT@@"
# What the first host of the build printed (its image at ffffffff81000000)
LINES = ["ffffffff810a0a60 T kernel_clone", "ffffffff810a1000 t kernel_clone.cold",
         "ffffffff82a00010 d _kbl_addr_exc_page_fault",
         "ffffffffc0123000 t kernel_clone_helper\t[some_module]"]


class Host:
    """A fake session: answers the kallsyms script with `lines` and counts how often it was asked."""

    def __init__(self, lines, deadline=1e12):
        self.lines, self.deadline, self.asked = lines, deadline, 0

    def run(self, command, timeout=None):
        self.asked += 1
        return Result(0, f"{MARK} kallsyms\n" + "".join(ln + "\n" for ln in self.lines) + f"status ok\n{MARK} end\n", "")


def facts(first="ffffffff81000000 T startup_64", notes="4045367849 164", **kw):
    f = recorded("facts-bookworm-sig-enforce.txt")
    return dataclasses.replace(f, kallsyms=[], kallsyms_readable=False, kallsyms_first=first, kernel_notes=notes, **kw)


def test_one_read_per_build_moved_by_each_hosts_slide():
    cache = kallsyms.Cache()
    a, b = Host(LINES), Host(["must not be read"])
    fa, fb = facts(), facts(first="ffffffff9e200000 T startup_64")
    kallsyms.fill(cache, a, fa, {"kernel_clone"}, "a")
    kallsyms.fill(cache, b, fb, {"kernel_clone"}, "b")
    assert (a.asked, b.asked) == (1, 0)
    assert fa.kallsyms == LINES and fa.kallsyms_from == ""
    slide = 0xffffffff9e200000 - 0xffffffff81000000
    assert fb.kallsyms_readable and fb.kallsyms_from == "a"
    assert fb.kallsyms == [f"{0xffffffff810a0a60 + slide:016x} T kernel_clone",
                           f"{0xffffffff810a1000 + slide:016x} t kernel_clone.cold",
                           f"{0xffffffff82a00010 + slide:016x} d _kbl_addr_exc_page_fault"]   # not the module's
    # a host that may not see addresses sees zeros, as its own read would show
    fc = facts(first="0000000000000000 T startup_64")
    kallsyms.fill(cache, Host([]), fc, {"kernel_clone"}, "c")
    assert fc.kallsyms[0] == "0000000000000000 T kernel_clone" and not fc.addresses_visible


def test_another_build_or_no_addresses_to_move_is_read_again():
    cache = kallsyms.Cache()
    kallsyms.fill(cache, Host(LINES), facts(first="0000000000000000 T startup_64"), {"kernel_clone"}, "hidden")
    root = Host(LINES)
    kallsyms.fill(cache, root, facts(), {"kernel_clone"}, "root")   # zeros cannot be moved to real addresses
    other = Host(LINES)
    kallsyms.fill(cache, other, facts(notes="1 164"), {"kernel_clone"}, "rebuilt")   # another build ID
    unknown = Host(LINES)
    kallsyms.fill(cache, unknown, facts(notes=""), {"kernel_clone"}, "no-notes")
    assert (root.asked, other.asked, unknown.asked) == (1, 1, 1)


def test_a_probe_target_the_build_lacks_is_read_and_fails_on_every_host(module_info):
    """kernel_clone present, kmod_no_such_function not: the lines are not reused, and each host's own
    read makes its verdict fail."""
    cache = kallsyms.Cache()
    wanted = {"kernel_clone", "kmod_no_such_function"}
    hosts = [Host(LINES) for _ in range(3)]
    fs = [facts(first=f"ffffffff8{i}000000 T startup_64") for i in range(3)]
    for i, (h, f) in enumerate(zip(hosts, fs)):
        kallsyms.fill(cache, h, f, wanted, f"h{i}")
    assert [h.asked for h in hosts] == [1, 1, 1] and all(f.kallsyms_from == "" for f in fs)
    info = module_info(probes=("kmod_no_such_function",))
    for f in fs:
        f = dataclasses.replace(f, release=fs[0].release)
        v = judge(f, kernels.classify(f.release, f.machine, f.debian_version), info, "h")
        assert v.status == FAIL and "kmod_no_such_function is not in" in v.reason
    # a symbol only a module has: the module and where it sits are each host's own
    assert not kallsyms.reusable(LINES, {"kernel_clone_helper"})
    assert kallsyms.reusable(LINES, {"kernel_clone"})


def test_reused_lines_give_the_same_verdict_as_reading(vm_facts, module_info):
    """The recorded VM read its own kallsyms; a second host of that build at another KASLR slide, given
    the VM's lines, is judged exactly as if it had read its own (its blacklist moved with it)."""
    from tests.unit.preflight.test_verdict import crcs
    info = module_info(crcs(vm_facts))
    first = next(ln for ln in vm_facts.kallsyms if " T " in ln)
    own = dataclasses.replace(vm_facts, kallsyms_first=first, kernel_notes="1 2")
    cache = kallsyms.Cache()
    kallsyms.fill(cache, Host(vm_facts.kallsyms), own, {"kernel_clone"}, "vm")
    slide = 0x200000
    base = int(first.split()[0], 16)
    moved_bl = "\n".join(_move_blacklist(ln, slide) for ln in vm_facts.blacklist.splitlines())
    twin = dataclasses.replace(vm_facts, kallsyms=[], kallsyms_readable=False, blacklist=moved_bl,
                               kallsyms_first=f"{base + slide:016x} T {first.split()[2]}", kernel_notes="1 2")
    kallsyms.fill(cache, Host(["must not be read"]), twin, {"kernel_clone"}, "twin")
    assert twin.kallsyms_from == "vm"
    k = kernels.classify(vm_facts.release, vm_facts.machine, vm_facts.debian_version)
    a, b = judge(own, k, info, "h", None), judge(twin, k, info, "h", None)
    assert a.status == b.status == PASS and a.reason == b.reason
    # and a blacklisted target stays blacklisted at the new addresses
    line = vm_facts.blacklist.splitlines()[0]
    name = line.split()[1]
    start = int(line.split()[0].split("-")[0], 16)
    cache = kallsyms.Cache()
    lines = vm_facts.kallsyms + [f"{start:016x} T {name}"]
    kallsyms.fill(cache, Host(lines), dataclasses.replace(own, kallsyms=[]), {name}, "vm")
    twin2 = dataclasses.replace(twin, kallsyms=[], kallsyms_from="")
    kallsyms.fill(cache, Host(["must not be read"]), twin2, {name}, "twin")
    assert twin2.kallsyms_from == "vm"
    v = judge(twin2, k, module_info(crcs(vm_facts), probes=(name,)), "h", None)
    assert v.status == FAIL and "blacklist" in v.reason


def _move_blacklist(line: str, slide: int) -> str:
    rng, _, rest = line.partition("\t")
    lo, _, hi = rng.partition("-")
    return f"0x{int(lo, 16) + slide:016x}-0x{int(hi, 16) + slide:016x}\t{rest}"


def test_hosts_of_one_build_wait_for_the_one_that_reads():
    """Twenty hosts of one build at once: one reads, the others take its lines."""
    cache = kallsyms.Cache()
    gate = threading.Event()

    class Slow(Host):
        def run(self, command, timeout=None):
            gate.wait(5)
            return super().run(command, timeout)
    hosts = [Slow(LINES) for _ in range(20)]
    fs = [facts() for _ in hosts]
    threads = [threading.Thread(target=kallsyms.fill, args=(cache, h, f, {"kernel_clone"}, f"n{i}"))
               for i, (h, f) in enumerate(zip(hosts, fs))]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert sum(h.asked for h in hosts) == 1 and all(f.kallsyms_readable for f in fs)
