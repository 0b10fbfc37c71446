"""The build matrix: modules x pinned kernels x arches, built in parallel, cached by inputs, recorded in
the manifest. A cell whose inputs are unchanged is a cache hit: no engine is even contacted."""
import hashlib
import json
import os
import contextlib
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import arch as archmod
from .. import atomic, render, report
from ..archive.fetch import sha256_file
from ..errors import BuildFailed, UserError
from ..nofollow import UnsafeFile
from ..manifest import Manifest
from ..parallel import parallel
from ..pins import Pin, require_locked
from ..progress import Progress
from ..spec import Module, Project
from . import collect, diagnose, dkmsbuild, images
from .runtime import Mount, Runtime
from .runtime.base import CONTAINER_BUILD_PATH
from .signing import SECRET_MOUNT, BuildSigning

RECIPE_VERSION = "1"  # bump when the build command below changes meaning
BUILD_MOUNT = CONTAINER_BUILD_PATH  # where every engine's build folder appears to the compiler
# Fixed build identity so that the same inputs give the same bytes on any machine and checkout path.
REPRODUCIBLE_ENV = {"KBUILD_BUILD_TIMESTAMP": "1970-01-01", "KBUILD_BUILD_USER": "kmod",
                    "KBUILD_BUILD_HOST": "kmod", "SOURCE_DATE_EPOCH": "0", "LC_ALL": "C", "HOME": "/tmp"}


@dataclass
class Cell:
    module: Module
    pin: Pin | None           # None for a host build against a user-given KDIR
    arch: archmod.Arch
    sources: render.Sources
    kdir: str
    image: str = ""
    signing: "BuildSigning | None" = None
    key: str = ""
    result: str = "pending"
    record: dict = field(default_factory=dict)
    dkms_conf: str = ""       # a hand-written module without a dkms.conf: the one kmod generates for it

    @property
    def kernel(self) -> str:
        return self.pin.name if self.pin else "host"

    @property
    def id(self) -> str:
        return f"{self.module.name}/{self.kernel}/{self.arch.name}"

    def out_dir(self, dist: Path) -> Path:
        return dist / self.module.name / self.kernel / self.arch.name


def make_argv(cell: Cell, build_dir: str, build_arch: str) -> list[str]:
    return ["make", "-C", cell.kdir, f"M={build_dir}", *cell.arch.make_vars(build_arch), "modules"]


def command_doc(cell: Cell, build_arch: str) -> dict:
    """What runs: the make command of a templated module; dkms's build of a hand-written one."""
    if cell.module.source is None:
        return {"argv": make_argv(cell, BUILD_MOUNT, build_arch)}
    return {"script": dkmsbuild.script_text(), "conf": None if dkmsbuild.own_conf(cell.sources.files)
            else cell.dkms_conf, "make_vars": cell.arch.make_vars(build_arch)}


def cell_key(cell: Cell, build_arch: str) -> str:
    doc = {"recipe": RECIPE_VERSION, "sources": cell.sources.digest, "arch": cell.arch.name,
           "kernel": cell.pin.lock_entry() if cell.pin else cell.kdir, "image": cell.image,
           **command_doc(cell, build_arch), "env": REPRODUCIBLE_ENV,
           **({"signed_by": cell.signing.cert_sha256} if cell.signing else {})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan(project: Project, modules: list[Module], pins: list[Pin], arches: list[archmod.Arch],
         kdir: str | None = None, signing: "BuildSigning | None" = None) -> list[Cell]:
    build_arch = images.build_arch()
    cells = []
    for m in modules:
        sources = render.render(m, project.dist / m.name / "src")
        # the package's dkms.conf less its module list, [package.NAME] options included: the build
        # runs what dkms will run on the VM
        conf = (dkmsbuild.generated_conf(m, project)
                if m.source is not None and not dkmsbuild.own_conf(sources.files) else "")
        for a in arches:
            if m.arches and a.name not in m.arches:
                continue
            if kdir:
                cells.append(Cell(m, None, a, sources, kdir, dkms_conf=conf))
                continue
            for p in pins:
                if a.name not in p.arches:
                    continue
                require_locked(p)
                cells.append(Cell(m, p, a, sources, p.kdir(a), image=images.tag(p), signing=signing,
                                  dkms_conf=conf))
    if not cells:
        raise UserError("nothing to build: no module, kernel and arch combination matches",
                        "check --module/--kernel/--arch and the modules' `arches`")
    for c in cells:
        c.key = cell_key(c, build_arch)
    return cells


def cached(cell: Cell, manifest: Manifest, dist: Path) -> bool:
    rec = manifest.cell(cell.id)
    if not rec or rec.get("key") != cell.key or rec.get("result") not in ("ok", "excluded"):
        return False
    return all((dist / k["ko"]).is_file() and sha256_file(dist / k["ko"]) == k["sha256"]
               for k in rec.get("kos") or [])


def build_one(cell: Cell, runtime: Runtime, dist: Path, build_arch: str, progress: Progress) -> dict:
    out = cell.out_dir(dist)
    started = time.monotonic()
    hand_written = cell.module.source is not None
    # A hand-written module's build folder is dkms's tree, its sources mounted beside it (dkmsbuild).
    ws = runtime.prepare(cell.sources.dir, [] if hand_written else cell.sources.files, dist / ".work",
                         prefix=cell.id.replace("/", "_") + ".")
    try:
        env = dict(REPRODUCIBLE_ENV)
        if runtime.build_path is None:  # the host: map the private folder to the fixed container path
            env["KCFLAGS"] = f"-ffile-prefix-map={ws.dir}={BUILD_MOUNT}"
        if hand_written:
            argv, mounts = hand_written_command(cell, ws, env)
            shown = [*argv[:2], dkmsbuild.SCRIPT]
        else:
            argv, mounts = make_argv(cell, ws.path, build_arch), ()
            shown = argv
        run_argv = argv
        if cell.signing and runtime.build_path and not hand_written:  # then sign with the kernel's sign-file
            sign = cell.signing.command(cell.kdir, f"{ws.path}/{cell.module.name}.ko")
            run_argv = ["sh", "-ec", '"$@"; exec ' + " ".join(map(shlex.quote, sign)), "kmod-build", *argv]
        if cell.pin and runtime.build_path:  # a pinned image: proven to hold the locked packages first
            run_argv = ["sh", "-c", images.check_script(), "kmod-check-image", *run_argv]
            env["KMOD_LOCKED_PACKAGES"] = "\n".join(images.installed(cell.pin))
        with contextlib.ExitStack() as stack:
            if cell.signing and runtime.build_path and not hand_written:
                secret = stack.enter_context(cell.signing.secret_dir(*runtime.build_user()))
                mounts = (*mounts, Mount(secret, SECRET_MOUNT, True))
            res = runtime.run(ws, run_argv, image=cell.image, env=env, mounts=mounts,
                              on_output=lambda t: progress.note(cell.id, t.splitlines()[-1] if t.strip() else ""))
        log_path = out / "build.log"
        header = f"# reproduce: {' '.join(shown)}\n# image: {cell.image or 'host'}\n"
        refused = images.refused_image(cell.pin, cell.image, res.exit_code, res.output) if cell.pin else ""
        atomic.write_text(log_path, header + (refused + "\n" if refused else res.output))
        rec = {"module": cell.module.name, "version": cell.module.version, "kernel": cell.kernel,
               "arch": cell.arch.name, "release": cell.pin.release(cell.arch) if cell.pin else "",
               "key": cell.key, "inputs": {"sources": cell.sources.files, "kdir": cell.kdir,
                                           "pin_abi": cell.pin.abi if cell.pin else "",
                                           "pin_packages": {p.basename: p.sha256 for p in cell.pin.packages
                                                            if p.role in images.IMAGE_ROLES}
                                           if cell.pin else {}},
               "image": cell.image, "log": str(log_path.relative_to(dist)),
               "tools": images.tool_versions(cell.pin, cell.arch) if cell.pin else {},
               "seconds": {"container": round(res.seconds, 3)}}
        ko_name = f"{cell.module.name}.ko"
        if refused:
            rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None, errors=[refused],
                       diagnosis=[{"cause": "image differs from the lock", "line": refused,
                                   "advice": f"remove it (docker rmi {cell.image}), then `invoke toolchains --build`"}])
            rec["seconds"]["total"] = round(time.monotonic() - started, 3)
            return rec
        try:
            if hand_written:
                hand_written_result(cell, res, ws, out, dist, rec)
                got = None
            else:
                got = runtime.collect(ws, [ko_name], out) if res.exit_code == 0 else {}
        except UnsafeFile as e:
            # The build left a link or a special file where its module belongs: a build error, and
            # nothing of it is copied (a link could point at any host file).
            (out / ko_name).unlink(missing_ok=True)
            rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None, kos=[], errors=[e.message],
                       diagnosis=[{"cause": "unsafe artifact", "line": e.message,
                                   "advice": "kmod never follows a link out of a build; see docs/security.md"}])
        else:
            if got is None:
                pass
            elif ko_name in got:
                rec.update(result="ok", kos=[collect.record(out / ko_name, "", got[ko_name], dist)], diagnosis=[])
                if cell.signing:
                    from ..lint import signature
                    rec["signature"] = {"cert_sha256": cell.signing.cert_sha256,
                                        "state": signature.state((out / ko_name).read_bytes(), cell.signing.cert)}
            else:
                found = diagnose.diagnose(res.output)
                rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None,
                           errors=diagnose.relevant_lines(res.output),
                           diagnosis=[{"cause": d.cause, "line": d.line, "advice": d.advice} for d in found])
        if rec.get("kos"):  # the first .ko, for readers of a one-module record
            rec.update(ko=rec["kos"][0]["ko"], ko_sha256=rec["kos"][0]["sha256"])
        rec["seconds"]["total"] = round(time.monotonic() - started, 3)
        return rec
    finally:
        runtime.cleanup(ws)


def hand_written_command(cell: Cell, ws, env: dict) -> tuple[list[str], tuple[Mount, ...]]:
    """The dkms-like build of a hand-written module (kmod.build.dkmsbuild): argv and mounts; sets env.
    The (empty) build folder is dkms's tree; the sources are mounted read-only beside it."""
    own = dkmsbuild.own_conf(cell.sources.files)
    if not own:
        atomic.write_text(ws.dir / dkmsbuild.CONF_NAME, cell.dkms_conf, 0o644)
    argv = ["bash", "-c", dkmsbuild.script_text()]
    if cell.pin is None:  # a host build against the user's KDIR
        release = (Path(cell.kdir) / "include" / "config" / "kernel.release").read_text().strip()
        src, tree, headers = str(cell.sources.dir), str(ws.dir), [cell.kdir]
        env.update(KMOD_DKMS_TREE=tree, KMOD_KSOURCEDIR=cell.kdir)
        mounts = ()
    else:
        release = cell.pin.release(cell.arch)
        common = f"/usr/src/linux-headers-{cell.pin.abi}-common"
        src, tree, headers = dkmsbuild.SRC_MOUNT, dkmsbuild.DKMS_TREE, [cell.kdir, common]
        mounts = (Mount(cell.sources.dir, src, True), Mount(ws.dir, tree, False),
                  Mount(dkmsbuild.lib_modules(ws.dir, cell.kdir, common), f"/lib/modules/{release}", True))
    conf = f"{src}/dkms.conf" if own else f"{tree}/{dkmsbuild.CONF_NAME}"
    env.update(dkmsbuild.env(cell, conf, "" if own else (cell.module.build_dir or "."), release, headers))
    env["KMOD_SRC"] = src
    return argv, mounts


def hand_written_result(cell: Cell, res, ws, out: Path, dist: Path, rec: dict) -> None:
    r = dkmsbuild.parse(res.output)
    rec["dkms"] = {"conf": "own" if dkmsbuild.own_conf(cell.sources.files) else "generated",
                   "package_name": r.value("PACKAGE_NAME"), "package_version": r.value("PACKAGE_VERSION"),
                   "make": r.make, "warnings": r.warnings,
                   "exclusive": {k: r.value(k) for k in r.conf if k.startswith("BUILD_EXCLUSIVE_")}}
    if res.exit_code == dkmsbuild.EXCLUDED_EXIT and r.excluded:
        rec.update(result="excluded", reason=r.excluded, ko=None, ko_sha256=None, kos=[], diagnosis=[])
        return
    if res.exit_code == 0:
        try:
            rec.update(result="ok", kos=collect.collect(ws.dir, dkmsbuild.built_modules(r), out, dist),
                       diagnosis=[])
            return
        except BuildFailed as e:
            r.errors.append(e.message)
    found = diagnose.for_dkms_build(r, cell)
    rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None, kos=[],
               errors=(r.errors + diagnose.relevant_lines(res.output))[:diagnose.MAX_LINES],
               diagnosis=[{"cause": d.cause, "line": d.line, "advice": d.advice} for d in found])


@dataclass
class Outcome:
    cells: list[Cell]
    manifest: Manifest

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.result == "failed"]

    @property
    def exit_code(self) -> int:
        return 2 if self.failed else 0


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


def run(project: Project, cells: list[Cell], runtime_name: str = "docker", jobs: int | None = None,
        command: str = "", quiet: bool = False, after_build=None) -> Outcome:
    """Build `cells`, skipping cache hits. `after_build(cell, record)` may add to a fresh record
    (the lint step) and return False to fail the cell."""
    from . import runtime as runtimes
    dist = project.dist
    manifest = Manifest(dist / "manifest.json")
    todo = [c for c in cells if not cached(c, manifest, dist)]
    for c in cells:
        if c not in todo:
            c.result, c.record = "cached", manifest.cell(c.id)
    if not todo:
        report.write(project)
        return Outcome(cells, manifest)
    rt = runtimes.get(runtime_name)  # no engine: fail before touching the manifest
    build_arch = images.build_arch()
    manifest.start_run(command)
    for c in todo:
        manifest.update_cell(c.id, result="pending", key=c.key)
    manifest.save()
    try:
        labels = (images.ensure_all(rt.client, [c.pin for c in todo if c.pin], quiet)
                  if runtime_name == "docker" else {})
        with Progress("build", [c.id for c in cells], quiet) as prog:
            for c in cells:
                if c.result == "cached":
                    prog.update(c.id, "cached", c.record.get("ko", ""))

            def one(cell: Cell):
                prog.update(cell.id, "running")
                rec = build_one(cell, rt, dist, build_arch, prog)
                if cell.image in labels:
                    rec["image_id"] = labels[cell.image]["id"]
                    rec["compiler"] = labels[cell.image].get("kmod.compiler", "")
                if rec["result"] == "ok" and after_build and after_build(cell, rec) is False:
                    rec["result"] = "failed"
                cell.result, cell.record = rec["result"], rec
                manifest.set_cell(cell.id, rec)
                manifest.save()
                detail = (rec.get("reason") or ", ".join(k["ko"] for k in rec.get("kos") or []) or
                          (rec["diagnosis"][0]["cause"] if rec.get("diagnosis") else f"see {rec['log']}"))
                prog.update(cell.id, rec["result"], f"{detail} ({rec['seconds']['total']:.1f}s)")

            parallel(one, todo, min(jobs or default_jobs(), len(todo)))
        status = "failed" if any(c.result == "failed" for c in cells) else "ok"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException:
        status = "error"
        raise
    finally:
        rt.cleanup()
        manifest.finish_run(status)
        report.write(project)
    return Outcome(cells, manifest)
