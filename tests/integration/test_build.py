"""The build against real toolchain images: every pinned kernel, flavour and arch, real compilers, real
headers."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kmod import arch, pins
from kmod.lint import target
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
GOLDEN = ROOT / "tests" / "golden"
MODULES = ("clone_probe", "multi_kprobe", "openat_ret", "plain_ret")


def generic_cells() -> list[str]:
    """PIN/ARCH of every generic kernel the lock has."""
    return [f"{p.name}/{a.name}" for p in pins.all_pins().values() for a, f in p.planned()
            if f.is_generic and p.has(a)]


def flavour_cells() -> list[tuple]:
    """(pin, arch, flavour) of every other locked flavour."""
    return [(p, a, f.name) for p in pins.all_pins().values() for a, f in p.planned()
            if not f.is_generic and p.has(a, f.name)]


def kmod(*args, cwd, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


def modinfo(ko: Path) -> dict:
    with open(ko, "rb") as f:
        elf = ELFFile(f)
        data = elf.get_section_by_name(".modinfo").data()
        machine = elf["e_machine"]
    fields = dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)
    fields["machine"] = machine
    return fields


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, docker_client):
    """Every golden module (kprobe, kretprobe, offsets, args, clones) on every generic KDIR of every arch,
    one invocation; then the default module on every cloud and rt KDIR, a second one."""
    work = tmp_path_factory.mktemp("matrix")
    shutil.copy(GOLDEN / "kmod.toml", work / "kmod.toml")
    proc = kmod("build", "--arch", "all", "--kernel", "all", "--module", "all", "--no-lint", cwd=work)
    flavours = kmod("build", "--arch", "all", "--kernel", "all", "--flavour", "cloud,rt", "--module", "clone_probe",
                    "--no-lint", cwd=work)
    return work, proc, flavours


def test_every_generic_kdir_of_every_arch_builds(matrix):
    work, proc, _ = matrix
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((work / "dist/manifest.json").read_text())
    expected = {f"{m}/{c}" for m in MODULES for c in generic_cells()}
    assert {a for c in generic_cells() for a in [c.split("/")[1]]} == set(arch.names())
    assert expected <= set(manifest["cells"])
    assert manifest["runs"][0]["status"] == "ok"
    for cell_id in expected:
        cell = manifest["cells"][cell_id]
        module, pin_name, arch_name = cell_id.split("/")
        pin, a = pins.get(pin_name), arch.get(arch_name)
        ko = work / "dist" / cell["ko"]
        assert ko == work / "dist" / module / pin_name / arch_name / f"{module}.ko"
        assert hashlib.sha256(ko.read_bytes()).hexdigest() == cell["ko_sha256"]
        info = modinfo(ko)
        assert info["machine"] == a.elf_machine
        release = pin.release(a)
        assert info["vermagic"].split()[0] == release, info["vermagic"]
        always = [w for w, cond in a.vermagic_words if not cond]   # aarch64, riscv: the arch's own word
        if always:
            assert info["vermagic"].split()[-len(always):] == always, info["vermagic"]
        assert info["license"] and info["name"] == module
        assert cell["compiler"].startswith(pin.compiler) and cell["image_id"].startswith("sha256:")
        assert cell["release"] == release and cell["seconds"]["total"] > 0
        assert os.stat(ko).st_uid == os.getuid()


def test_every_cloud_and_rt_kdir_builds_with_its_own_vermagic(matrix):
    work, _, proc = matrix
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = json.loads((work / "dist/manifest.json").read_text())["cells"]
    wanted = flavour_cells()
    assert {f for _, _, f in wanted} == {"cloud", "rt"}
    for p, a, f in wanted:
        cell = cells[f"clone_probe/{p.label(f)}/{a.name}"]
        assert cell["flavour"] == f and cell["kernel"] == p.name and cell["release"] == p.release(a, f)
        vermagic = modinfo(work / "dist" / cell["ko"])["vermagic"].split()
        assert vermagic[0] == p.release(a, f) and f"-{f}-" in vermagic[0]
        # what that flavour's own .config makes of vermagic.h (rt: preempt_rt, or preempt where 6.12's
        # PREEMPT_RT also sets PREEMPT_BUILD)
        config = target._config(target.headers_files(p, a, f)[1])
        assert vermagic == target.vermagic_from_config(p.release(a, f), config).split(), vermagic
        assert (config.get("CONFIG_PREEMPT_RT") == "y") == (f == "rt")


@pytest.mark.parametrize("pin_name", ["bullseye-5.10", "trixie-6.12"])
def test_hit_counters_are_sysfs_params(matrix, pin_name):
    """`hits` and `symbols` are module parameters (read-only, checked at runtime by the boot test)."""
    work, _, _ = matrix
    with open(work / f"dist/multi_kprobe/{pin_name}/arm64/multi_kprobe.ko", "rb") as f:
        modinfo_items = ELFFile(f).get_section_by_name(".modinfo").data().split(b"\0")
    assert b"parm=hits:times each probe fired, comma-separated in probe order" in modinfo_items
    assert b"parm=symbols:the probed symbols, in probe order" in modinfo_items


def test_unchanged_rebuild_starts_no_container(matrix):
    """A cache hit must not even talk to Docker: point it at a dead socket and it still succeeds."""
    work, _, _ = matrix
    proc = kmod("build", "--arch", "all", "--kernel", "all", "--module", "all", "--no-lint", cwd=work,
                env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert proc.returncode == 0, proc.stderr
    n = len(MODULES) * len(generic_cells())
    assert f"{n}/{n} built ({n} cached)" in proc.stdout


def test_changed_symbol_rebuilds_only_that_module(matrix):
    work, _, _ = matrix
    proc = kmod("build", "--arch", "arm64", "--kernel", "bookworm-6.1", "--module", "clone_probe",
                "--symbol", "kernel_clone,do_exit", "--no-lint", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "1/1 built (0 cached)" in proc.stdout
    raw = (work / "dist/clone_probe/bookworm-6.1/arm64/clone_probe.ko").read_bytes()
    assert b"do_exit\0" in raw


def test_reproducible_across_checkout_paths(tmp_path, docker_client):
    shas = []
    for where in ("first/checkout", "second/elsewhere/deeper"):
        d = tmp_path / where
        d.mkdir(parents=True)
        shutil.copy(GOLDEN / "kmod.toml", d / "kmod.toml")
        proc = kmod("build", "--arch", "arm64,x86_64", "--kernel", "trixie-6.12", "--module", "openat_ret",
                    "--no-lint", cwd=d)
        assert proc.returncode == 0, proc.stderr
        shas.append([hashlib.sha256((d / f"dist/openat_ret/trixie-6.12/{a}/openat_ret.ko").read_bytes()).hexdigest()
                     for a in ("arm64", "x86_64")])
    assert shas[0] == shas[1]


def test_seed_sample_explained_on_6_1_and_builds_on_5_10(docker_client):
    proc = kmod("build", "--module", "seed_kprobe", "--kernel", "bookworm-6.1,bullseye-5.10",
                "--arch", "x86_64", "--no-lint", cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "FAILED seed_kprobe/bookworm-6.1/x86_64" in proc.stderr
    assert "has no member named 'fault_handler'" in proc.stderr
    assert "why: struct kprobe has no fault_handler since Linux 5.14" in proc.stderr
    assert "seed_kprobe/bullseye-5.10/x86_64" not in proc.stderr.split("FAILED", 1)[1]
    assert (ROOT / "dist/seed_kprobe/bullseye-5.10/x86_64/seed_kprobe.ko").is_file()


def test_gpl_only_symbol_from_non_gpl_module_explained(tmp_path, docker_client):
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "proprietary"\nlicense = "Proprietary"\n'
                                        'symbols = ["kernel_clone"]\n')
    proc = kmod("build", "--kernel", "bookworm-6.1", "--arch", "x86_64", "--no-lint", cwd=tmp_path)
    assert proc.returncode == 2
    assert "GPL-only symbol 'register_kprobe'" in proc.stderr
    assert "why: register_kprobe is exported GPL-only" in proc.stderr


def test_build_lints_each_cell_and_fails_on_error(tmp_path, docker_client):
    """`invoke build` lints what it built against the cell's own pin; an error fails the cell (exit 2)."""
    shutil.copytree(ROOT / "tests/fixtures/sleepy_probe", tmp_path / "sleepy_probe")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "sleepy_probe"\nsource = "sleepy_probe"\n'
                                        'symbols = ["kernel_clone"]\n')
    proc = kmod("build", "--kernel", "bookworm-6.1", "--arch", "x86_64,arm64", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for a in ("x86_64", "arm64"):
        assert f"FAILED sleepy_probe/bookworm-6.1/{a}" in proc.stderr
    assert "lint sleep-in-probe-handler" in proc.stderr and "msleep" in proc.stderr
    cell = json.loads((tmp_path / "dist/manifest.json").read_text())["cells"]["sleepy_probe/bookworm-6.1/arm64"]
    assert cell["result"] == "failed" and any(f["rule"] == "sleep-in-probe-handler" for f in cell["lint"])
    # the clean default module passes the same lint step
    (tmp_path / "kmod.toml").write_text(SPEC_CLEAN)
    assert kmod("build", "--kernel", "bookworm-6.1", "--arch", "arm64", cwd=tmp_path).returncode == 0


SPEC_CLEAN = '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'


def test_parallel_multi_pin_build_lints_each_cell_against_its_own_pin(tmp_path, docker_client):
    """Two modules on every pin at once (build threads lint at the same time): each cell's lint uses
    its own pin, so every vermagic check passes, and a NAME+OFFSET probe is looked up by NAME."""
    (tmp_path / "kmod.toml").write_text(
        '[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone", "kernel_clone+0x4"]\n'
        '[[module]]\nname = "open_ret"\ntemplate = "kretprobe"\nsymbols = ["do_sys_openat2"]\n')
    proc = kmod("build", "--kernel", "all", "--arch", "arm64", "--module", "all", "--jobs", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = json.loads((tmp_path / "dist/manifest.json").read_text())["cells"]
    assert len(cells) == 2 * len(pins.names())
    for cell_id, cell in cells.items():
        pin = pins.get(cell_id.split("/")[1])
        assert cell["result"] == "ok", (cell_id, cell.get("lint"))
        assert modinfo(tmp_path / "dist" / cell["ko"])["vermagic"].split()[0] == pin.release(arch.get("arm64"))
        assert not [f for f in cell["lint"] if f["severity"] in ("error", "warning")], (cell_id, cell["lint"])


def test_lint_verdict_is_part_of_the_cell(tmp_path, docker_client):
    """--no-lint records the cell as unlinted: package refuses it; the next `build` lints the same .ko
    (no rebuild), and package accepts it. New rule data would re-lint it the same way."""
    (tmp_path / "kmod.toml").write_text(SPEC_CLEAN)
    cell = "clone_probe/bookworm-6.1/arm64"
    assert kmod("build", "--kernel", "bookworm-6.1", "--arch", "arm64", "--no-lint", cwd=tmp_path).returncode == 0
    rec = json.loads((tmp_path / "dist/manifest.json").read_text())["cells"][cell]
    assert rec["lint_state"] == "unlinted" and rec["lint_rules"] is None
    refused = kmod("package", "--format", "tarball", cwd=tmp_path)
    assert refused.returncode == 1 and "never linted" in refused.stderr and "--force" in refused.stderr
    again = kmod("build", "--kernel", "bookworm-6.1", "--arch", "arm64", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "re-linted" in again.stderr
    linted = json.loads((tmp_path / "dist/manifest.json").read_text())["cells"][cell]
    from kmod import paths
    assert linted["lint_state"] == "linted" and linted["lint_rules"] == paths.lint_fingerprint()
    assert linted["ko_sha256"] == rec["ko_sha256"] and linted["seconds"] == rec["seconds"]  # not rebuilt
    assert kmod("package", "--format", "tarball", cwd=tmp_path).returncode == 0
    assert "1 cached" in kmod("build", "--kernel", "bookworm-6.1", "--arch", "arm64", cwd=tmp_path).stdout
    # linted under other rule data (as after an upgrade of kmod's rules): linted again, not taken as is
    path = tmp_path / "dist/manifest.json"
    data = json.loads(path.read_text())
    data["cells"][cell]["lint_rules"] = "0" * 24
    path.write_text(json.dumps(data))
    # package alone does not ship that stale verdict either
    stale = kmod("package", "--format", "tarball", cwd=tmp_path)
    assert stale.returncode == 1 and "linted under older lint rules" in stale.stderr, stale.stderr
    third = kmod("build", "--kernel", "bookworm-6.1", "--arch", "arm64", cwd=tmp_path)
    assert third.returncode == 0 and "re-linted" in third.stderr and "0 cached" in third.stdout
