"""The DKMS packages installed the way a user's VM installs them: real dpkg, rpm and dkms in Debian
containers with the pinned headers. Images: kmod/package/testimage.py (dkms on top of the toolchain
image, cached by a hash of the recipe)."""
import os
import re
import subprocess
import sys

import pytest

from kmod import pins
from kmod.build.runtime.docker import remove
from tests.conftest import ROOT, need_tool

pytestmark = pytest.mark.integration
SPEC = '[[module]]\nname = "clone_probe"\nversion = "0.1.0"\nsymbols = ["kernel_clone"]\nrecord_args = 1\n'
NAME, VERSION = "clone-probe", "0.1.0"
DEB = f"{NAME}-dkms_{VERSION}_all.deb"
RPM = f"{NAME}-dkms-{VERSION}-1.noarch.rpm"
TARBALL = f"{NAME}-{VERSION}.tar.gz"
# A second kernel series on bookworm (the 6.12 backport) proves one package builds for two kernels.
BOOKWORM_612 = r"^linux-headers-6\.12\..*\+deb12-amd64$"
RPM_IN_CONTAINER = 'rpm --define "__transaction_unshare %{nil}"'  # rpm's unshare plugin needs privileges


def kmod(*args, cwd, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    for tool in ("dpkg-deb", "rpmbuild", "lintian"):
        need_tool(tool)
    work = tmp_path_factory.mktemp("pkg") / "a checkout with spaces"  # paths with spaces work everywhere
    work.mkdir()
    (work / "kmod.toml").write_text(SPEC)
    tmp = tmp_path_factory.mktemp("tmpdir")
    proc = kmod("package", cwd=work, env={"TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lintian:" in proc.stdout and "no errors" in proc.stdout
    assert list(tmp.iterdir()) == []   # lintian's index databases went with it, and nothing else stayed
    return work / "dist" / "packages"


def release(pin_name: str) -> str:
    from kmod import arch
    return pins.get(pin_name).release(arch.get("x86_64"))


def run_script(client, image: str, script: str, pkgs, out) -> str:
    out.mkdir(exist_ok=True)
    container = client.containers.create(image, ["sh", "-c", script], network_mode="none", detach=True,
                                         volumes={str(pkgs): {"bind": "/pkgs", "mode": "ro"},
                                                  str(out): {"bind": "/out", "mode": "rw"}})
    try:
        container.start()
        container.wait(timeout=600)
        return container.logs().decode("utf-8", "replace")
    finally:
        remove(container)  # with its volumes; never an error if something else removes it first


def marks(output: str, key: str) -> list[str]:
    return [ln.split(": ", 1)[1] if ": " in ln else "" for ln in output.splitlines() if ln.startswith(key + ":")]


INSTALL_REMOVE = r"""
set -u
{install} > /out/install.log 2>&1; echo "INSTALL: $?"
dkms status -m {name} -v {version} | sed 's/^/STATUS: /'
find /lib/modules -path '*/updates/dkms/*' | sort | sed 's/^/KO: /'
cp /lib/modules/{kver}/updates/dkms/clone_probe.ko* /out/ 2>/dev/null
{remove} > /out/remove.log 2>&1; echo "REMOVE: $?"
find /var/lib/dkms /lib/modules /usr/src -name '*clone[-_]probe*' | sed 's/^/LEFT: /'
dkms status | sed 's/^/AFTER: /'
{tarball} /pkgs/{tarball_file} > /out/tarball.log 2>&1; echo "TARBALL_ADD: $?"
dkms build -m {name} -v {version} -k {kver} > /out/tarbuild.log 2>&1; echo "TARBALL_BUILD: $?"
dkms status -m {name} -v {version} -k {kver} | sed 's/^/TARBALL_STATUS: /'
"""


def check_install_remove(out_text: str, kvers: list[str], logs) -> None:
    assert marks(out_text, "INSTALL") == ["0"], (logs / "install.log").read_text()
    status = marks(out_text, "STATUS")
    for kver in kvers:
        assert any(f"{NAME}/{VERSION}, {kver}, x86_64: installed" in s for s in status), (status, out_text)
        assert any(re.fullmatch(rf"/lib/modules/{re.escape(kver)}/updates/dkms/clone_probe\.ko(\.xz|\.zst)?", k)
                   for k in marks(out_text, "KO")), out_text
    assert marks(out_text, "REMOVE") == ["0"], (logs / "remove.log").read_text()
    assert marks(out_text, "LEFT") == [], "removal left files behind"
    assert marks(out_text, "AFTER") == []
    assert marks(out_text, "TARBALL_ADD") == ["0"], (logs / "tarball.log").read_text()
    assert marks(out_text, "TARBALL_BUILD") == ["0"], (logs / "tarbuild.log").read_text()
    assert any(": built" in s for s in marks(out_text, "TARBALL_STATUS")), out_text


@pytest.fixture(scope="module")
def bookworm(packages, docker_client, tmp_path_factory):
    from kmod.package import testimage
    image = testimage.ensure(pins.get("bookworm-6.1"), extra_headers=BOOKWORM_612, client=docker_client)
    out = tmp_path_factory.mktemp("bookworm")
    kver = release("bookworm-6.1")
    script = INSTALL_REMOVE.format(install=f"dpkg -i /pkgs/{DEB}", remove=f"dpkg -r {NAME}-dkms",
                                   tarball="dkms ldtarball", tarball_file=TARBALL, name=NAME, version=VERSION,
                                   kver=kver)
    script += "ls /lib/modules | sed 's/^/KERNEL: /'\n"
    return run_script(docker_client, image, script, packages, out), out


@pytest.fixture(scope="module")
def trixie(packages, docker_client, tmp_path_factory):
    from kmod.package import testimage
    image = testimage.ensure(pins.get("trixie-6.12"), packages=("rpm",), client=docker_client)
    out = tmp_path_factory.mktemp("trixie")
    kver = release("trixie-6.12")
    script = INSTALL_REMOVE.format(install=f"dpkg -i /pkgs/{DEB}", remove=f"dpkg -r {NAME}-dkms",
                                   tarball="dkms add", tarball_file=TARBALL, name=NAME, version=VERSION, kver=kver)
    # Then the .rpm through rpm's own scriptlets (%post add/build/install, %preun remove).
    script += (f"dkms remove -m {NAME} -v {VERSION} --all >/dev/null 2>&1\n"
               f"{RPM_IN_CONTAINER} -i --nodeps /pkgs/{RPM} > /out/rpm-i.log 2>&1; echo \"RPM_I: $?\"\n"
               f"dkms status -m {NAME} -v {VERSION} | sed 's/^/RPM_STATUS: /'\n"
               f"{RPM_IN_CONTAINER} -e --nodeps {NAME}-dkms > /out/rpm-e.log 2>&1; echo \"RPM_E: $?\"\n"
               "find /var/lib/dkms /lib/modules /usr/src -name '*clone[-_]probe*' | sed 's/^/RPM_LEFT: /'\n")
    return run_script(docker_client, image, script, packages, out), out


def test_deb_on_bookworm_builds_for_two_kernels_and_removes_cleanly(bookworm):
    text, out = bookworm
    kernels = marks(text, "KERNEL")
    second = [k for k in kernels if k.startswith("6.12.")]
    assert release("bookworm-6.1") in kernels and second, kernels
    check_install_remove(text, [release("bookworm-6.1"), second[0]], out)


def test_deb_on_trixie_and_tarball_via_dkms_add(trixie):
    text, out = trixie
    check_install_remove(text, [release("trixie-6.12")], out)


def test_rpm_scriptlets_drive_dkms(trixie):
    text, out = trixie
    assert marks(text, "RPM_I") == ["0"], (out / "rpm-i.log").read_text()
    assert any(f"{release('trixie-6.12')}, x86_64: installed" in s for s in marks(text, "RPM_STATUS")), text
    assert marks(text, "RPM_E") == ["0"], (out / "rpm-e.log").read_text()
    assert marks(text, "RPM_LEFT") == []


def test_dkms_built_module_passes_lint(bookworm):
    """`invoke lint --target` on the .ko that dkms built on the VM-like container from the .deb."""
    _, out = bookworm
    ko = out / "clone_probe.ko"
    assert ko.is_file()
    proc = kmod("lint", "--target", "bookworm-6.1", "--format", "json", str(ko), cwd=out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json
    (module,) = json.loads(proc.stdout)["modules"]
    assert module["arch"] == "x86_64"
    assert not [f for f in module["findings"] if f["severity"] == "error"]


def test_rpm_metadata_and_rpmlint(packages):
    rpm_path = packages / RPM
    files = subprocess.run(["rpm", "-qpl", str(rpm_path)], capture_output=True, text=True, check=True).stdout.split()
    assert f"/usr/src/{NAME}-{VERSION}/dkms.conf" in files
    assert not any(f.endswith((".o", ".ko")) for f in files)
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(rpm_path)], capture_output=True, text=True,
                             check=True).stdout
    assert f"dkms add -m {NAME} -v {VERSION} --rpm_safe_upgrade" in scripts
    assert f"dkms remove -m {NAME} -v {VERSION} --all --rpm_safe_upgrade" in scripts
    requires = subprocess.run(["rpm", "-qp", "--requires", str(rpm_path)], capture_output=True, text=True,
                              check=True).stdout.split("\n")
    assert "dkms" in requires
    rpmlint = need_tool("rpmlint")
    proc = subprocess.run([rpmlint, str(rpm_path)], capture_output=True, text=True)
    errors = [ln for ln in proc.stdout.splitlines() if ": E: " in ln]
    # An unsigned .rpm is an rpmlint error by design; signing is the distributor's step (docs/packaging.md).
    assert [e for e in errors if "no-signature" not in e] == [], proc.stdout


def test_deb_lintian_and_contents(packages):
    deb_path = packages / DEB
    fields = subprocess.run(["dpkg-deb", "-f", str(deb_path)], capture_output=True, text=True, check=True).stdout
    assert "Section: kernel" in fields and "Architecture: all" in fields and "Depends: dkms (>= " in fields
    listing = subprocess.run(["dpkg-deb", "-c", str(deb_path)], capture_output=True, text=True, check=True).stdout
    assert f"./usr/src/{NAME}-{VERSION}/dkms.conf" in listing
    assert ".ko" not in listing and "root/root" in listing
    proc = subprocess.run([need_tool("lintian"), "--no-cfg", str(deb_path)], capture_output=True, text=True)
    assert not [ln for ln in proc.stdout.splitlines() if ln.startswith("E:")], proc.stdout


def test_dkms_signs_with_the_configured_key(docker_client, tmp_path):
    """--sign-key/--sign-cert name files on the target; dkms there signs with them. The throwaway key
    is mounted at run time only: it enters no image layer and no package."""
    from kmod.package import testimage
    for tool in ("dpkg-deb", "openssl"):
        need_tool(tool)
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-days", "1", "-subj", "/CN=kmod test/",
                    "-newkey", "rsa:2048", "-keyout", str(keys / "mok.key"), "-outform", "DER",
                    "-out", str(keys / "mok.der")], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "kmod.toml").write_text(SPEC)
    proc = kmod("package", "--format", "deb", "--sign-key", "/keys/mok.key", "--sign-cert", "/keys/mok.der",
                cwd=work)
    assert proc.returncode == 0, proc.stderr
    image = testimage.ensure(pins.get("trixie-6.12"), packages=("rpm",), client=docker_client)
    kver = release("trixie-6.12")
    script = (f"dpkg -i /pkgs/{DEB} > /dev/null 2>&1; echo \"INSTALL: $?\"\n"
              f"f=$(ls /lib/modules/{kver}/updates/dkms/clone_probe.ko*)\n"
              "case $f in *.xz) xz -dc $f > /tmp/m.ko ;; *) cp $f /tmp/m.ko ;; esac\n"
              "tail -c 28 /tmp/m.ko | tr -d '\\n' | sed 's/^/TAIL: /'; echo\n")
    container = docker_client.containers.create(
        image, ["sh", "-c", script], network_mode="none", detach=True,
        volumes={str(work / "dist" / "packages"): {"bind": "/pkgs", "mode": "ro"},
                 str(keys): {"bind": "/keys", "mode": "ro"}})
    try:
        container.start()
        container.wait(timeout=300)
        text = container.logs().decode("utf-8", "replace")
    finally:
        remove(container)  # with its volumes; never an error if something else removes it first
    assert marks(text, "INSTALL") == ["0"], text
    assert marks(text, "TAIL") == ["~Module signature appended~"], text


def test_path_with_spaces_and_all_or_nothing(packages, tmp_path):
    """The set above was made in a path with spaces. A failure in the last format leaves no partial set:
    nothing new in dist/packages, the old set untouched, no work folder."""
    assert " " in str(packages) and sorted(p.name for p in packages.iterdir()) == sorted([DEB, RPM, TARBALL])
    project = packages.parent.parent
    before = {p.name: p.read_bytes() for p in packages.iterdir()}
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "rpmbuild").write_text("#!/bin/sh\necho 'rpmbuild: injected failure' >&2\nexit 1\n")
    (fake / "rpmbuild").chmod(0o755)
    (project / "kmod.toml").write_text(SPEC.replace('version = "0.1.0"', 'version = "0.2.0"'))
    try:
        proc = subprocess.run([sys.executable, "-m", "kmod", "package", "--format", "deb,tarball,rpm"], cwd=project,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{fake}:{os.environ['PATH']}"})
    finally:
        (project / "kmod.toml").write_text(SPEC)
    assert proc.returncode == 2 and "injected failure" in proc.stderr and "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in packages.iterdir()} == before  # no 0.2.0 .deb or tarball
    work = project / "dist" / ".work"
    assert not work.exists() or not list(work.iterdir())
