"""Real out-of-tree modules as their authors ship them, through every stage: Debian's *-dkms sources and
the kernel's own kprobe samples, fetched from the mirror at test time (tests/realmods.py), each built for
every pin and arch (`invoke build`, lint included), packaged (`invoke package`), installed with the real
dkms on two pins (INSTALLS: one container per pin), the kprobe ones boot-tested. The shapes: modules that export symbols to each other (ddcci,
tp_smapi, nat-rtsp), subfolder builds (ddcci, ovpn-dco), a Makefile that needs variables (tp_smapi's
HDAPS=1, the samples' CONFIG_SAMPLE_*=m), names with - (ddcci-backlight, hid-kye, ovpn-dco-v2), a helper
script with its exec bit (ovpn-dco's gen-compat-autoconf.sh), upstream BUILD_EXCLUSIVE_* (lenovo-legion,
ddcci), a name Debian ships already (v4l2loopback), no dkms.conf at all (the samples).

docs/real-modules.md keeps the module x cell table this produces; KMOD_REALMODS_DOC=1 rewrites it."""
import json
import os
import re
import stat
import subprocess
import sys

import pytest

from kmod import pins
from tests.conftest import ROOT, need_tool
from tests.integration.test_package import run_script
from tests.realmods import RealModules

pytestmark = pytest.mark.integration
DOC = ROOT / "docs" / "real-modules.md"
# spec name -> (Debian package, suite, extra spec lines). The suite is the one whose version we take.
DKMS = {
    "ddcci": ("ddcci-dkms", "bookworm", ""),
    # these two replace modules the kernel ships (hdaps; hid-kye, hid-uclogic, ...) on purpose: kmod
    # refuses such a build unless the spec says so
    "tp-smapi": ("tp-smapi-dkms", "bookworm", "replaces_in_tree = true\n"),
    "ovpn-dco": ("openvpn-dco-dkms", "bookworm", ""),
    "nat-rtsp": ("nat-rtsp-dkms", "bookworm", ""),
    "digimend": ("digimend-dkms", "bookworm", "replaces_in_tree = true\n"),
    "v4l2loopback": ("v4l2loopback-dkms", "bookworm", ""),
    "lenovo-legion": ("lenovolegionlinux-dkms", "trixie", ""),
}
SAMPLES = "kprobe-samples"
SAMPLES_SPEC = ('make_vars = { CONFIG_SAMPLE_KPROBES = "m", CONFIG_SAMPLE_KRETPROBES = "m" }\n'
                'symbols = ["kernel_clone"]\n')
HOME_PIN = {"bookworm": "bookworm-6.1", "trixie": "trixie-6.12"}
# Built for every pin and both arches; the others for every pin on x86_64 (their arm64 cells would show
# nothing new, and CI minutes count).
BOTH_ARCHES = ("ddcci", "tp-smapi", "lenovo-legion", SAMPLES)
# Load order that modpost's depends= (the symbols one takes from another) must give.
ORDER = {"ddcci": [("ddcci", "ddcci-backlight")], "tp-smapi": [("thinkpad_ec", "tp_smapi"), ("thinkpad_ec", "hdaps")],
         "nat-rtsp": [("nf_conntrack_rtsp", "nf_nat_rtsp")]}


def kmod(*args, cwd, timeout=3000, env=None):
    return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


def upstream_version(pkg) -> str:
    """The Debian version without its revision, as a spec version (no '-')."""
    v = pkg.version.split(":", 1)[-1].rsplit("-", 1)[0]
    return re.sub(r"[^A-Za-z0-9.+~]", "+", v)


@pytest.fixture(scope="session")
def realmods(tmp_path_factory, docker_client):
    mods = RealModules()
    work = tmp_path_factory.mktemp("realmods")
    spec, sources = [], {}
    for name, (package, suite, extra) in DKMS.items():
        src = mods.dkms_source(package, suite)
        sources[name] = src
        spec.append(f'[[module]]\nname = "{name}"\nversion = "{upstream_version(mods.package(package, suite))}"\n'
                    f'source = "{src}"\n{extra}')
    samples = mods.kernel_samples("bookworm", "6.1", "kprobes")
    sources[SAMPLES] = samples
    spec.append(f'[[module]]\nname = "{SAMPLES}"\nversion = "6.1"\nsource = "{samples}"\n{SAMPLES_SPEC}')
    (work / "kmod.toml").write_text("\n".join(spec))
    both = kmod("build", "--module", ",".join(BOTH_ARCHES), cwd=work)
    x86 = kmod("build", "--module", ",".join(n for n in DKMS if n not in BOTH_ARCHES), "--arch", "x86_64", cwd=work)
    # the flavour cells test_real_dkms_installs_them compares with the real dkms (SKIPPED)
    flavours = [kmod("build", "--module", m, "--kernel", pin, "--flavour", f, "--arch", "x86_64", cwd=work)
                for (pin, m), f in SKIPPED.items()]
    manifest = json.loads((work / "dist" / "manifest.json").read_text())
    return work, "".join(p.stderr for p in [both, x86, *flavours]), manifest["cells"], sources


def cells_of(cells: dict, module: str) -> dict:
    return {cid: rec for cid, rec in cells.items() if cid.split("/")[0] == module}


def test_every_cell_builds_or_is_excluded_or_says_why(realmods):
    work, stderr, cells, _ = realmods
    assert "Traceback" not in stderr, stderr
    modules = [*DKMS, SAMPLES]
    assert {cid.split("/")[0] for cid in cells} == set(modules)
    generic = {p.name for p in pins.all_pins().values()}
    for name in modules:
        mine = {cid: rec for cid, rec in cells_of(cells, name).items() if cid.split("/")[1] in generic}
        expected = [f"{name}/{p.name}/{a}" for p in pins.all_pins().values() for a in p.arches
                    if name in BOTH_ARCHES or a == "x86_64"]
        assert sorted(mine) == sorted(expected), name
        home = HOME_PIN[DKMS[name][1]] if name in DKMS else "bookworm-6.1"
        assert mine[f"{name}/{home}/x86_64"]["result"] in ("ok", "excluded"), (name, mine[f"{name}/{home}/x86_64"])
        for cid, rec in mine.items():
            assert rec["result"] in ("ok", "excluded", "failed"), (cid, rec["result"])
            if rec["result"] == "failed":
                assert rec.get("diagnosis") or rec.get("errors"), f"{cid} failed with no reason"
            if rec["result"] == "excluded":
                assert rec["reason"].startswith(("BUILD_EXCLUSIVE", "kernel ")), (cid, rec["reason"])


def test_lint_reports_no_false_errors(realmods):
    """Every built cell was linted (all its modules together) and none has an error: what modprobe loads
    (siblings' exports, the kernel's) the lint must not call unresolved."""
    _, _, cells, _ = realmods
    for cid, rec in cells.items():
        if rec["result"] == "ok":
            errors = [f for f in rec.get("lint") or [] if f["severity"] == "error"]
            assert errors == [], (cid, errors)
        elif rec["result"] == "failed":
            assert not [f for f in rec.get("lint") or [] if f["severity"] == "error"], f"{cid} failed by the lint"


def built_names(conf_text: str) -> list[str]:
    return re.findall(r'^BUILT_MODULE_NAME\[\d+\]="?([\w-]+)', conf_text, re.M)


def test_every_module_of_a_package_is_collected_in_load_order(realmods):
    _, _, cells, sources = realmods
    for name in DKMS:
        expected = built_names((sources[name] / "dkms.conf").read_text())
        if name == "v4l2loopback":
            expected = ["v4l2loopback"]  # BUILT_MODULE_NAME[0]="$PACKAGE_NAME"
        for cid, rec in cells_of(cells, name).items():
            if rec["result"] != "ok":
                continue
            got = [k["name"] for k in rec["kos"]]
            assert sorted(got) == sorted(expected), (cid, got)
            for first, then in ORDER.get(name, []):
                if first in got and then in got:
                    assert got.index(first) < got.index(then), (cid, got)
                    dep = next(k for k in rec["kos"] if k["name"] == then)
                    assert first.replace("-", "_") in dep["depends"], (cid, dep)
    for cid, rec in cells_of(cells, SAMPLES).items():
        assert rec["result"] == "ok", (cid, rec.get("diagnosis"))
        assert [k["name"] for k in rec["kos"]] == ["kprobe_example", "kretprobe_example"]
        assert all(k["kprobes"] for k in rec["kos"]) and rec["dkms"]["conf"] == "generated"


def test_shapes_names_subfolders_exec_bits_exclusions(realmods):
    work, _, cells, _ = realmods
    ok = {cid: rec for cid, rec in cells.items() if rec["result"] == "ok"}
    by_module = {}
    for cid, rec in ok.items():
        by_module.setdefault(cid.split("/")[0], set()).update((k["name"], k["location"]) for k in rec["kos"])
    assert ("ddcci-backlight", "ddcci-backlight/") in by_module["ddcci"]          # subfolder, name with -
    assert ("ovpn-dco-v2", "drivers/net/ovpn-dco/") in by_module["ovpn-dco"]
    assert {"hid-kye", "hid-uclogic"} <= {n for n, _ in by_module["digimend"]}
    helper = work / "dist" / "ovpn-dco" / "src" / "gen-compat-autoconf.sh"
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    # tp_smapi's hdaps.ko only exists with HDAPS=1, which its dkms.conf's MAKE passes
    assert ("hdaps", "") in by_module["tp-smapi"]
    legion = cells_of(cells, "lenovo-legion")
    assert legion["lenovo-legion/bookworm-6.1/x86_64"]["result"] == "excluded"
    assert "BUILD_EXCLUSIVE_KERNEL_MIN" in legion["lenovo-legion/bookworm-6.1/x86_64"]["reason"]
    assert legion["lenovo-legion/trixie-6.12/arm64"]["result"] == "excluded"
    assert "CONFIG_ACPI" in legion["lenovo-legion/trixie-6.12/arm64"]["reason"]


@pytest.fixture(scope="session")
def packages(realmods):
    for tool in ("dpkg-deb", "rpmbuild", "lintian"):
        need_tool(tool)
    work, _, cells, _ = realmods
    modules = sorted({cid.split("/")[0] for cid, rec in cells.items() if rec["result"] == "ok"})
    # --force: a module whose source does not compile on one pin (6.12 for most of these bookworm sources)
    # is still packaged for the kernels it builds on, as its Debian package is
    proc = kmod("package", "--module", ",".join(modules), "--force", cwd=work)
    return work / "dist" / "packages", proc, modules


def test_packages_keep_dkms_conf_modes_and_name_every_module(packages, realmods):
    out, proc, modules = packages
    _, _, _, sources = realmods
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: v4l2loopback-dkms clashes with Debian's own v4l2loopback-dkms" in proc.stderr
    assert 'name = "v4l2loopback-local"' in proc.stderr
    listing = subprocess.run(["dpkg-deb", "-c", str(out / "ovpn-dco-dkms_0.0+git20231103_all.deb")],
                             capture_output=True, text=True, check=True).stdout
    assert re.search(r"^-rwxr-xr-x .*/usr/src/ovpn-dco-0\.0\+git20231103/gen-compat-autoconf\.sh$", listing, re.M)
    conf = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(out / "ddcci-dkms_0.4.2_all.deb")], capture_output=True,
                          check=True).stdout
    assert (sources["ddcci"] / "dkms.conf").read_bytes() in conf  # kept, not replaced
    samples = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(out / f"{SAMPLES}-dkms_6.1_all.deb")],
                             capture_output=True, check=True).stdout
    assert b'BUILT_MODULE_NAME[1]="kretprobe_example"' in samples and b'BUILD_EXCLUSIVE_CONFIG="CONFIG_KPROBES"' in samples
    control = subprocess.run(["dpkg-deb", "-f", str(out / "nat-rtsp-dkms_0.7+5.3_all.deb"), "Description"],
                             capture_output=True, text=True, check=True).stdout
    assert "with kprobes" not in control and "does not use kprobes" in control


# What the real dkms installs: one container per pin, every package of it installed there in turn (dkms
# builds each against every kernel whose headers the image has: the pin's generic, cloud and rt ones, as
# on a VM). module -> the .ko it must install for the pin's generic kernel. The shapes: modules that need
# each other (ddcci, tp-smapi), a helper script the Makefile runs, whose exec bit must survive the package
# (ovpn-dco), MAKE variables (tp-smapi's HDAPS=1 makes hdaps.ko), no dkms.conf (the samples), an upstream
# gate (lenovo-legion). bookworm: without its 6.12 backport headers, for which ddcci 0.4.2 does not
# compile; trixie: the image test_package.py uses.
INSTALLS = {
    "bookworm-6.1": {"ddcci": ["ddcci", "ddcci-backlight"], "ovpn-dco": ["ovpn-dco-v2"],
                     "tp-smapi": ["hdaps", "thinkpad_ec", "tp_smapi"], "lenovo-legion": None},
    "trixie-6.12": {SAMPLES: ["kprobe_example", "kretprobe_example"], "lenovo-legion": ["legion-laptop"]},
}
# lenovo-legion's BUILD_EXCLUSIVE_CONFIG (CONFIG_ACPI_WMI) rules out trixie's cloud kernel: kmod records the
# cell excluded, and the real dkms, which builds the package for that kernel too, must skip it. On
# bookworm its BUILD_EXCLUSIVE_KERNEL_MIN="6.3" (kmod: excluded) is a directive bookworm's dkms 3.0.10
# does not know: the package says dkms (>= 3.0.11), and dpkg refuses it instead of a build that fails.
SKIPPED = {("trixie-6.12", "lenovo-legion"): "cloud"}
INSTALL_SCRIPT = r"""
for deb in {debs}; do
    dpkg -i "/pkgs/$deb" >"/out/$deb.log" 2>&1; echo "INSTALL $deb: $?"
done
dkms status | sed 's/^/STATUS: /'
find /lib/modules -path '*/updates/dkms/*' -name '*.ko*' | sed 's|^/lib/modules/\([^/]*\)/.*/|KO: \1 |'
"""


def deb_of(out, module: str):
    [deb] = out.glob(f"{module}-dkms_*_all.deb")
    return deb


@pytest.fixture(scope="session")
def installed(packages, docker_client, tmp_path_factory):
    """pin -> (the container's output, its folder of dpkg logs, module -> .deb)"""
    from kmod.package import testimage
    out, proc, _ = packages
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {}
    for pin, modules in INSTALLS.items():
        image = testimage.ensure(pins.get(pin), packages=("rpm",) if pin == "trixie-6.12" else (),
                                 client=docker_client)
        debs = {m: deb_of(out, m).name for m in modules}
        logs = tmp_path_factory.mktemp(f"dkms-{pin}")
        text = run_script(docker_client, image, INSTALL_SCRIPT.format(debs=" ".join(debs.values())), out, logs)
        got[pin] = (text, logs, debs)
    return got


def installed_kos(text: str, kver: str) -> set[str]:
    return {re.sub(r"\.ko(\.xz|\.zst)?$", "", ln.split(" ", 2)[2]) for ln in text.splitlines()
            if ln.startswith(f"KO: {kver} ")}


@pytest.mark.parametrize("pin,module", [(p, m) for p, ms in INSTALLS.items() for m in ms])
def test_real_dkms_installs_them(installed, realmods, pin, module):
    from kmod import arch
    text, logs, debs = installed[pin]
    log = (logs / f"{debs[module]}.log").read_text()
    cells, conf = realmods[2], (realmods[3][module] / "dkms.conf")
    want = INSTALLS[pin][module]
    x86 = arch.get("x86_64")
    if want is None:
        assert cells[f"{module}/{pin}/x86_64"]["result"] == "excluded", cells[f"{module}/{pin}/x86_64"]
        assert f"INSTALL {debs[module]}: 1" in text and "depends on dkms (>= 3.0.11)" in log, log
        return
    assert f"INSTALL {debs[module]}: 0" in text, log
    assert cells[f"{module}/{pin}/x86_64"]["result"] == "ok"
    assert set(want) <= installed_kos(text, pins.get(pin).release(x86)), text
    flavour = SKIPPED.get((pin, module))
    if flavour:
        rec = cells[f"{module}/{pins.get(pin).label(flavour)}/x86_64"]
        assert rec["result"] == "excluded" and "BUILD_EXCLUSIVE" in rec["reason"], rec
        kver = pins.get(pin).release(x86, flavour)
        dkms_name = re.search(r'^PACKAGE_NAME="?([\w-]+)', conf.read_text(), re.M)[1]
        assert not installed_kos(text, kver) & set(want), text
        assert not any(ln.startswith(f"STATUS: {dkms_name}/") and f", {kver}," in ln for ln in text.splitlines()), text
        assert re.search(rf"{dkms_name}/[^/]+/{re.escape(kver)}/x86_64/dkms.conf\s+for module \S+\s+includes a "
                         r"BUILD_EXCLUSIVE directive", log), log


@pytest.fixture(scope="session")
def booted(realmods):
    from kmod import arch
    for a in arch.select("all"):   # the samples boot on every arch: each arch file names its QEMU
        need_tool(a.qemu["binary"])
    work, _, _, _ = realmods
    samples = kmod("boot-test", "--module", SAMPLES, cwd=work)
    plain = kmod("boot-test", "--module", "ddcci", "--kernel", "bookworm-6.1", "--arch", "x86_64", cwd=work)
    cells = json.loads((work / "dist" / "manifest.json").read_text())["cells"]
    return samples, plain, cells


def test_kprobe_samples_pass_with_kmods_own_count_as_proof(booted):
    """Every cell passes with kmod's own hit count as proof, except where the build's lint said before the
    boot that the kernel refuses kprobe_example's probe at kernel_clone+0 (riscv64's 6.12, no
    KPROBES_ON_FTRACE): there the boot test must confirm it, at insmod."""
    samples, _, cells = booted
    refused = {cid for cid, rec in cells_of(cells, SAMPLES).items()
               if any(f["rule"] == "kprobe-entry-refused" for f in rec.get("lint") or [])}
    assert refused and len(refused) < len(cells_of(cells, SAMPLES)), refused
    assert samples.returncode == (2 if refused else 0), samples.stderr[-3000:]   # 2: a module failed
    for cid, rec in cells_of(cells, SAMPLES).items():
        boot = rec["boot"]
        if cid in refused:
            assert boot["verdict"] == "fail" and boot["step"] == "insmod", (cid, boot["step"], boot["reason"])
            continue
        assert boot["verdict"] == "pass", (cid, boot["step"], boot["reason"])
        # the entry or just past its landing pad (x86 ENDBR, arm64 BTI)
        assert re.match(r"kmod.s kprobe events on the same addresses counted kernel_clone\+0x[0-9a-f]+=[1-9]", boot["proof"])
        assert boot["hits"] and all(h > 0 for h in boot["hits"])


def test_module_without_kprobes_is_judged_on_load_unload_and_health(booted):
    _, plain, cells = booted
    assert plain.returncode == 0, plain.stderr[-3000:]
    boot = cells["ddcci/bookworm-6.1/x86_64"]["boot"]
    assert boot["verdict"] == "pass" and boot["proof"].startswith("none needed: the module registers no kprobes")
    assert "proof: none needed" in plain.stderr


def table(cells: dict) -> str:
    """docs/real-modules.md's table: one row per module, one column per pin and arch."""
    series = {p.name: [int(x) for x in p.series.split(".")] for p in pins.all_pins().values()}
    columns = sorted({(rec["kernel"], rec["arch"]) for rec in cells.values() if rec.get("kernel")},
                     key=lambda c: (series[c[0]], c[1]))
    word = {"ok": "ok", "excluded": "excluded", "failed": "FAILED"}
    rows = ["| module | " + " | ".join(f"{k} {a}" for k, a in columns) + " |",
            "|---|" + "---|" * len(columns)]
    for name in [*DKMS, SAMPLES]:
        cellwords = []
        for k, a in columns:
            rec = cells.get(f"{name}/{k}/{a}", {})
            w = word.get(rec.get("result"), "-")
            if rec.get("boot"):
                w += f", boot {rec['boot']['verdict']}"
            if a == "x86_64" and name in INSTALLS.get(k, {}):
                w += ", dkms installs" if INSTALLS[k][name] else ", dkms too old"
            cellwords.append(w)
        rows.append(f"| {name} | " + " | ".join(cellwords) + " |")
    why = []
    for cid, rec in sorted(cells.items()):
        if rec.get("result") == "failed":
            first = (rec.get("diagnosis") or [{}])[0].get("advice") or (rec.get("errors") or [""])[0]
            first = re.sub(r"/var/lib/dkms/[^/]+/[^/]+/build/", "", first)
            why.append(f"- {cid}: {first[:150]}")
    return "\n".join(rows) + "\n\nWhy the FAILED cells fail (the first diagnosis or compiler error):\n\n" + "\n".join(why) + "\n"


def test_docs_table_is_what_the_tests_produce(booted, installed):
    """The table, with the real dkms's word on the cells test_real_dkms_installs_them installs (installed, or
    skipped as its BUILD_EXCLUSIVE_* says): that test asserts each."""
    _, _, cells = booted
    produced = table(cells)
    begin, end = "<!-- table: tests/integration/test_realmods.py -->\n", "<!-- end of table -->\n"
    text = DOC.read_text()
    if os.environ.get("KMOD_REALMODS_DOC") == "1":
        head, rest = text.split(begin, 1)
        DOC.write_text(head + begin + produced + end + rest.split(end, 1)[1])
        text = DOC.read_text()
    assert begin + produced + end in text, f"docs/real-modules.md is out of date; the tests produced:\n{produced}"
