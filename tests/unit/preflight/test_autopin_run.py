"""--auto-pin's trouble with one group of hosts stays that group's: a kernel the mirror no longer serves
(resolve_kernel raises) or a build that cannot run is a note on those hosts, the other hosts keep their
verdicts, and dist/preflight.json is written whatever happened."""
import dataclasses
import json
import shutil

import pytest

from kmod import pins
from kmod import preflight
from kmod import spec as specmod
from kmod.archive import resolve
from kmod.errors import InfraError, UserError
from kmod.preflight import autopin, kernels
from kmod.preflight.hosts import parse
from kmod.preflight.report import HostResult
from kmod.preflight.verdict import FAIL, PASS, Verdict
from tests.conftest import ROOT
from tests.unit.preflight.conftest import recorded

SPEC = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n'


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "toolchains", tmp_path / "toolchains")
    monkeypatch.setenv("KMOD_TOOLCHAINS", str(tmp_path / "toolchains"))
    pins.all_pins.cache_clear()
    (tmp_path / "kmod.toml").write_text(SPEC)
    yield specmod.load(tmp_path / "kmod.toml")
    pins.all_pins.cache_clear()


def host(name, facts, route, status):
    k = kernels.classify(facts.release, facts.machine, facts.debian_version)
    return HostResult(parse(name), label=f"root@{name}:22", facts=facts, kernel=k,
                      verdicts=[Verdict("clone_probe", status, f"as read on {name}", route)])


def fleet(vm_facts):
    """A host on an unpinned Debian kernel, one on a pinned kernel no cell was built for (dkms would
    build it), and one that a built cell serves: only the last needs nothing from --auto-pin."""
    cloud = host("cloud", recorded("facts-bookworm-cloud.txt"), "", FAIL)
    assert cloud.kernel.kind == kernels.DEBIAN
    unbuilt = host("unbuilt", vm_facts, "dkms", PASS)
    served = host("served", vm_facts, "prebuilt", PASS)
    assert unbuilt.kernel.kind == served.kernel.kind == kernels.PINNED
    return [cloud, unbuilt, served]


def run(project, monkeypatch, results):
    monkeypatch.setattr(preflight, "read_all", lambda run, hosts, title="": [dataclasses.replace(r) for r in results])
    opts = preflight.Options(auto_pin=True, quiet=True)
    return preflight.run(project, [r.host for r in results], project.select(None), opts)


def test_a_kernel_the_mirror_no_longer_serves_is_that_hosts_note(project, monkeypatch, vm_facts):
    def gone(base, arch, abi, flavour, version="", log=print):
        raise UserError(f"the {base.suite} archives have no downloadable kernel {abi}-{flavour} {version} for "
                        f"{arch.name}", "the host runs a build the mirror no longer serves: upgrade its kernel")
    monkeypatch.setattr(resolve, "resolve_kernel", gone)
    built = []
    monkeypatch.setattr(autopin.buildmod, "plan", lambda *a, **kw: [])   # the unbuilt group: nothing to do
    monkeypatch.setattr(autopin.buildmod, "run", lambda *a, **kw: built.append(a))
    lock = pins.lock_path().read_bytes()
    results = fleet(vm_facts)
    out = run(project, monkeypatch, results)
    assert [r.host.name for r in out] == ["cloud", "unbuilt", "served"]
    cloud = out[0]
    assert not cloud.error and cloud.verdicts[0].reason == "as read on cloud"
    [n] = [n for n in cloud.notes if n.startswith("--auto-pin")]
    assert "could not be locked: the bookworm archives have no downloadable kernel" in n and "upgrade" in n
    assert [v.reason for r in out[1:] for v in r.verdicts] == ["as read on unbuilt", "as read on served"]
    assert not [n for r in out[1:] for n in r.notes if n.startswith("--auto-pin")]
    assert not built and pins.lock_path().read_bytes() == lock
    saved = json.loads((project.dist / "preflight.json").read_text())
    assert [h["host"] for h in saved["hosts"]] == ["cloud", "unbuilt", "served"]
    assert any("could not be locked" in n for n in saved["hosts"][0]["notes"])


def test_a_build_that_cannot_run_is_a_note_on_the_hosts_it_was_for(project, monkeypatch, vm_facts):
    monkeypatch.setattr(resolve, "resolve_kernel", lambda *a, **kw: (_ for _ in ()).throw(
        InfraError("cannot download the index of bookworm-security", "is the mirror reachable?")))
    monkeypatch.setattr(autopin.buildmod, "plan", lambda *a, **kw: [object()])

    def no_engine(*a, **kw):
        raise InfraError("no Docker engine answers", "start dockerd")
    monkeypatch.setattr(autopin.buildmod, "run", no_engine)
    out = run(project, monkeypatch, fleet(vm_facts))
    notes = {r.host.name: [n for n in r.notes if n.startswith("--auto-pin")] for r in out}
    assert "could not be locked: cannot download the index" in notes["cloud"][0]
    assert notes["unbuilt"] == ["--auto-pin: the build could not run: no Docker engine answers (start dockerd)"]
    assert notes["served"] == []
    assert [r.verdicts[0].status for r in out] == [FAIL, PASS, PASS]
    assert (project.dist / "preflight.json").is_file()


def test_the_report_is_written_even_when_the_run_fails(project, monkeypatch, vm_facts):
    """A surprise after the hosts were read (here: in --auto-pin) still leaves dist/preflight.json."""
    def boom(*a, **kw):
        raise RuntimeError("a bug")
    monkeypatch.setattr(autopin, "run", boom)
    with pytest.raises(RuntimeError):
        run(project, monkeypatch, fleet(vm_facts))
    saved = json.loads((project.dist / "preflight.json").read_text())
    assert [h["host"] for h in saved["hosts"]] == ["cloud", "unbuilt", "served"]
