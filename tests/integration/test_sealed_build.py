"""A build is untrusted code: what it leaves behind is collected as regular files only, never through a
link, and nothing of the host reaches dist/ or a package (issue 8, item 1; docs/security.md).

One `kmod build` runs every hostile module at once (one pin, x86_64: a few seconds in all)."""
import gzip
import itertools
import json
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, need_tool

pytestmark = pytest.mark.integration

PIN = "bookworm-6.1"

# Each plants something where its .ko belongs, from the Kbuild (which kbuild runs as make code).
HOSTILE = {
    "evil_symlink": "$(shell ln -sf {secret} $(src)/evil_symlink.ko)",
    "evil_hardlink": "$(shell ln -f $(src)/Kbuild $(src)/evil_hardlink.ko)",
    "evil_fifo": "$(shell rm -f $(src)/evil_fifo.ko; mkfifo $(src)/evil_fifo.ko)",
}
# What the build sees of its sandbox, printed by its Kbuild into build.log (make's $(info)).
PROBE = r"""obj-m :=
$(info KMOD-PROBE uid=$(shell id -u))
$(info KMOD-PROBE capeff=$(shell sed -n 's/^CapEff:\s*//p' /proc/self/status))
$(info KMOD-PROBE capprm=$(shell sed -n 's/^CapPrm:\s*//p' /proc/self/status))
$(info KMOD-PROBE capbnd=$(shell sed -n 's/^CapBnd:\s*//p' /proc/self/status))
$(info KMOD-PROBE rootmount=$(shell awk '$$5 == "/" { print $$6 }' /proc/self/mountinfo))
$(info KMOD-PROBE vartmpwrite=$(shell touch /var/tmp/kmod-probe 2>/dev/null && echo yes || echo no))
$(info KMOD-PROBE nonewprivs=$(shell sed -n 's/^NoNewPrivs:\s*//p' /proc/self/status))
$(info KMOD-PROBE rootwrite=$(shell touch /kmod-probe 2>/dev/null && echo yes || echo no))
$(info KMOD-PROBE usrwrite=$(shell touch /usr/src/kmod-probe 2>/dev/null && echo yes || echo no))
$(info KMOD-PROBE tmpwrite=$(shell touch /tmp/kmod-probe 2>/dev/null && echo yes || echo no))
$(info KMOD-PROBE net=$(shell ls /sys/class/net | tr '\n' ,))
$(info KMOD-PROBE routes=$(shell tail -n +2 /proc/net/route | wc -l))
$(info KMOD-PROBE pids=$(shell cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null))
$(info KMOD-PROBE mem=$(shell cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null))
"""
REFUSED_AS = {"evil_symlink": "a symbolic link", "evil_hardlink": "a hard link", "evil_fifo": "a FIFO"}


def kmod(*args, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "kmod", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


def every_byte(root: Path):
    """(path, bytes) of every file below `root`, archives opened and decompressed too."""
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        data = p.read_bytes()
        yield p, data
        for opener in (gzip.decompress, lzma.decompress):
            try:
                yield p, opener(data)
            except Exception:
                pass
        if p.suffix in (".deb", ".rpm"):
            tool = ["dpkg-deb", "--fsys-tarfile", str(p)] if p.suffix == ".deb" else None
            if tool:
                yield p, subprocess.run(tool, capture_output=True).stdout
        if tarfile.is_tarfile(p):
            with tarfile.open(p) as t:
                for m in t.getmembers():
                    if m.isfile():
                        yield p, t.extractfile(m).read()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, docker_client):
    work = tmp_path_factory.mktemp("hostile")
    secret = work / "id_rsa"
    secret.write_bytes(b"-----BEGIN KMOD TEST SECRET----- " + os.urandom(16).hex().encode())
    spec = []
    for name, plant in HOSTILE.items():
        (work / name).mkdir()
        (work / name / "Kbuild").write_text("obj-m :=\n" + plant.format(secret=secret) + "\n")
        # the module's own dkms.conf names the .ko, so the build expects it where the Kbuild plants it
        (work / name / "dkms.conf").write_text(f'PACKAGE_NAME="{name.replace("_", "-")}"\nPACKAGE_VERSION="1"\n'
                                               f'BUILT_MODULE_NAME[0]="{name}"\n'
                                               'DEST_MODULE_LOCATION[0]="/updates/dkms"\n')
        spec.append(f'[[module]]\nname = "{name}"\nsource = "{name}"\n')
    (work / "probe").mkdir()
    (work / "probe" / "Kbuild").write_text(PROBE)
    spec.append('[[module]]\nname = "probe"\nsource = "probe"\n')
    (work / "kmod.toml").write_text("\n".join(spec))
    proc = kmod("build", "--module", "all", "--kernel", PIN, "--arch", "x86_64", "--no-lint", cwd=work, timeout=300)
    return work, secret.read_bytes(), proc


def test_planted_artifacts_fail_the_build_and_say_why(hostile):
    work, _, proc = hostile
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = json.loads((work / "dist/manifest.json").read_text())
    for name, kind in REFUSED_AS.items():
        assert f"FAILED {name}/{PIN}/x86_64" in proc.stderr
        assert f"{name}.ko is {kind}" in proc.stderr and "refused" in proc.stderr
        cell = manifest["cells"][f"{name}/{PIN}/x86_64"]
        assert cell["result"] == "failed" and cell["ko"] is None and cell["ko_sha256"] is None
        assert cell["diagnosis"][0]["cause"] == "unsafe artifact"
        assert not (work / f"dist/{name}/{PIN}/x86_64/{name}.ko").exists()


def test_no_host_byte_reaches_dist(hostile):
    work, secret, _ = hostile
    leaks = [str(p) for p, data in every_byte(work / "dist") if secret in data]
    assert leaks == []


def test_a_linked_source_file_ends_up_in_no_package(tmp_path, docker_client):
    """A hand-written folder with a link to a host file: the link is left out of the sources (one line
    says so), the module builds without it, and no package has a byte of the host file."""
    need_tool("dpkg-deb")
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:KMOD-TEST-HASH:" + os.urandom(8).hex().encode())
    src = tmp_path / "linked"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := linked.o\n")
    (src / "linked.c").write_text('#include <linux/module.h>\nMODULE_LICENSE("GPL");\n')
    os.symlink(secret, src / "shadow.h")
    (tmp_path / "kmod.toml").write_text('[[module]]\nname = "linked"\nsource = "linked"\n')
    built = kmod("build", "--kernel", PIN, "--arch", "x86_64", cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    said = [ln for ln in built.stderr.splitlines() if "shadow.h" in ln]
    assert len(said) == 1 and "outside the source folder" in said[0] and "Traceback" not in built.stderr
    proc = kmod("package", "--format", "deb,tarball", "--no-lintian", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    packages = sorted((tmp_path / "dist/packages").iterdir())
    assert {p.suffix for p in packages} == {".deb", ".gz"}
    assert [p for p, d in every_byte(tmp_path / "dist") if secret.read_bytes() in d] == []


@pytest.fixture(scope="module")
def sandbox(hostile) -> dict:
    work, _, _ = hostile
    seen = {}
    for line in (work / f"dist/probe/{PIN}/x86_64/build.log").read_text().splitlines():
        if line.startswith("KMOD-PROBE "):
            k, _, v = line[len("KMOD-PROBE "):].partition("=")
            seen.setdefault(k, v.strip())
    return seen


def test_build_runs_as_an_unprivileged_uid(sandbox):
    """Also when kmod runs as root (as in CI): never uid 0 in a build."""
    assert sandbox["uid"].isdigit() and int(sandbox["uid"]) != 0
    assert int(sandbox["uid"]) == (65534 if os.geteuid() == 0 else os.getuid())


def test_build_has_no_capabilities_and_no_new_privileges(sandbox):
    # A uid other than 0 has no effective capabilities anyway; the bounding set is what cap_drop empties
    # (Docker's default keeps 14 there), so that not even a setuid binary could regain one.
    assert int(sandbox["capeff"], 16) == int(sandbox["capprm"], 16) == 0
    assert int(sandbox["capbnd"], 16) == 0
    assert sandbox["nonewprivs"] == "1"


def test_build_root_filesystem_is_read_only_with_scratch_tmp(sandbox):
    # The root is mounted read-only: even the world-writable /var/tmp refuses a write (a uid other than
    # 0 could not write / or /usr anyway, so those alone would prove nothing).
    assert sandbox["rootmount"].split(",")[0] == "ro"
    assert sandbox["vartmpwrite"] == "no"
    assert sandbox["rootwrite"] == "no" and sandbox["usrwrite"] == "no"
    assert sandbox["tmpwrite"] == "yes"


def test_build_has_no_network(sandbox):
    assert sandbox["net"].strip(",") == "lo"
    assert sandbox["routes"] == "0"  # no interface but loopback, no route anywhere


def test_build_has_pid_and_memory_limits(sandbox):
    from kmod.build.runtime.docker import SANDBOX
    assert sandbox["pids"] == str(SANDBOX["pids_limit"])
    assert int(sandbox["mem"]) == 2 * 1024 ** 3


def test_signing_key_appears_in_no_output(tmp_path, docker_client):
    """Signed with the kernel's sign-file in the container; the key is nowhere in dist/ (archives
    decompressed), the logs, the manifest, an image, or left on the host (issue 8, item 7)."""
    import base64
    need_tool("openssl")
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
                    "-out", "cert.pem", "-days", "2", "-subj", "/CN=kmod-test-signing/"], cwd=tmp_path, check=True,
                   capture_output=True)
    pem = (tmp_path / "key.pem").read_bytes()
    body = b"".join(ln for ln in pem.splitlines() if not ln.startswith(b"-----"))
    # the DER key, a stretch of its PEM and one whole PEM line (what make's $(shell) would print of it)
    needles = [base64.b64decode(body)[-64:], body[100:164], pem.splitlines()[3]]
    from kmod import pins as pinsmod
    from kmod.build import images
    image = docker_client.images.get(images.tag(pinsmod.get(PIN)))
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    (tmp_path / "proj").mkdir()
    pair = tmp_path / "proj/pair"  # hand-written: two modules, one in a subfolder, the second uses the first
    (pair / "sub").mkdir(parents=True)
    (pair / "Kbuild").write_text("obj-m := first.o\nobj-m += sub/\n")
    (pair / "first.c").write_text('#include <linux/module.h>\nint first_value = 1;\nEXPORT_SYMBOL(first_value);\n'
                                  'MODULE_LICENSE("GPL");\n')
    (pair / "sub/Kbuild").write_text("obj-m := second.o\n")
    (pair / "sub/second.c").write_text('#include <linux/module.h>\nextern int first_value;\n'
                                       'static int __init s(void) { return first_value - 1; }\nmodule_init(s);\n'
                                       'MODULE_LICENSE("GPL");\n')
    # A hostile Kbuild that looks for the key while it builds: the build container has no key to find
    # (it is signed afterwards, in a container that runs sign-file alone).
    thief = tmp_path / "proj/thief"
    thief.mkdir()
    (thief / "Kbuild").write_text("obj-m := thief.o\n"
                                  "$(info KMOD-THIEF $(shell cat /run/kmod-sign/key.pem 2>&1))\n"
                                  "$(info KMOD-THIEF-LS $(shell ls -a /run/kmod-sign 2>&1))\n")
    (thief / "thief.c").write_text('#include <linux/module.h>\nMODULE_LICENSE("GPL");\n')
    own = tmp_path / "proj/own"  # hand-written with its own dkms.conf: the module it names, in a subfolder
    (own / "src").mkdir(parents=True)
    (own / "dkms.conf").write_text('PACKAGE_NAME="own"\nPACKAGE_VERSION="1"\nBUILT_MODULE_NAME[0]="own"\n'
                                   'BUILT_MODULE_LOCATION[0]="src/"\nDEST_MODULE_LOCATION[0]="/updates/dkms"\n'
                                   'MAKE[0]="make -C ${kernel_source_dir} M=${dkms_tree}/own/1/build/src"\n')
    (own / "src/Kbuild").write_text("obj-m := own.o\n")
    (own / "src/own.c").write_text('#include <linux/module.h>\nMODULE_LICENSE("GPL");\n')
    (tmp_path / "proj/kmod.toml").write_text('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n\n'
                                             '[[module]]\nname = "pair"\nsource = "pair"\n\n'
                                             '[[module]]\nname = "own"\nsource = "own"\n\n'
                                             '[[module]]\nname = "thief"\nsource = "thief"\n')
    proc = kmod("build", "--module", "all", "--kernel", PIN, "--arch", "x86_64,arm64",
                "--sign-key", str(tmp_path / "key.pem"), "--sign-cert", str(tmp_path / "cert.pem"), cwd=tmp_path / "proj")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((tmp_path / "proj/dist/manifest.json").read_text())
    from kmod.lint import signature
    cert = signature.Cert.load(str(tmp_path / "cert.pem"))
    expected = {"clone_probe": ["clone_probe"], "pair": ["first", "second"], "own": ["own"], "thief": ["thief"]}
    for (module, names), a in itertools.product(expected.items(), ("x86_64", "arm64")):
        cell = manifest["cells"][f"{module}/{PIN}/{a}"]
        assert [k["name"] for k in cell["kos"]] == names and cell["signature"]["state"] == "verifies", cell
        for k in cell["kos"]:
            ko = (tmp_path / "proj/dist" / k["ko"]).read_bytes()
            assert ko.endswith(signature.MAGIC) and k["signature"] == "verifies"
            assert signature.verifies(ko, cert)
        # the build's lint had the certificate: each module's signature was checked, and verified
        present = [f for f in cell["lint"] if f["rule"] == "signature-present"]
        assert len(present) == len(names) and all("kmod-test-signing" in f["message"] for f in present)
        assert not [f for f in cell["lint"] if f["rule"] in ("signature-absent", "signature-invalid")]
    assert [k["location"] for k in manifest["cells"][f"pair/{PIN}/x86_64"]["kos"]] == ["", "sub/"]
    looked = (tmp_path / f"proj/dist/thief/{PIN}/x86_64/build.log").read_text()
    assert "KMOD-THIEF-LS" in looked and "No such file or directory" in looked.split("KMOD-THIEF-LS", 1)[1]
    outputs = [*every_byte(tmp_path / "proj/dist"), ("stdout", proc.stdout.encode()), ("stderr", proc.stderr.encode())]
    assert [str(p) for p, data in outputs for n in needles if n in data] == []
    assert docker_client.images.get(image.id).id == image.id and images.find(docker_client, images.tag(pinsmod.get(PIN)))
    assert not any(n in json.dumps(docker_client.api.history(image.id)).encode() for n in needles)
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert not [d for d in after - before if d.startswith("kmod-sign")]
