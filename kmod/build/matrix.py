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
from ..errors import UserError
from ..nofollow import UnsafeFile
from ..manifest import Manifest
from ..parallel import parallel
from ..pins import Pin, require_locked
from ..progress import Progress
from ..spec import Module, Project
from . import diagnose, images
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


def cell_key(cell: Cell, build_arch: str) -> str:
    doc = {"recipe": RECIPE_VERSION, "sources": cell.sources.files, "arch": cell.arch.name,
           "kernel": cell.pin.lock_entry() if cell.pin else cell.kdir, "image": cell.image,
           "argv": make_argv(cell, BUILD_MOUNT, build_arch), "env": REPRODUCIBLE_ENV,
           **({"signed_by": cell.signing.cert_sha256} if cell.signing else {})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan(project: Project, modules: list[Module], pins: list[Pin], arches: list[archmod.Arch],
         kdir: str | None = None, signing: "BuildSigning | None" = None) -> list[Cell]:
    build_arch = images.build_arch()
    cells = []
    for m in modules:
        sources = render.render(m, project.dist / m.name / "src")
        for a in arches:
            if m.arches and a.name not in m.arches:
                continue
            if kdir:
                cells.append(Cell(m, None, a, sources, kdir))
                continue
            for p in pins:
                if a.name not in p.arches:
                    continue
                require_locked(p)
                cells.append(Cell(m, p, a, sources, p.kdir(a), image=images.tag(p), signing=signing))
    if not cells:
        raise UserError("nothing to build: no module, kernel and arch combination matches",
                        "check --module/--kernel/--arch and the modules' `arches`")
    for c in cells:
        c.key = cell_key(c, build_arch)
    return cells


def cached(cell: Cell, manifest: Manifest, dist: Path) -> bool:
    rec = manifest.cell(cell.id)
    if not rec or rec.get("key") != cell.key or rec.get("result") != "ok":
        return False
    ko = cell.out_dir(dist) / f"{cell.module.name}.ko"
    return ko.is_file() and sha256_file(ko) == rec.get("ko_sha256")


def build_one(cell: Cell, runtime: Runtime, dist: Path, build_arch: str, progress: Progress) -> dict:
    out = cell.out_dir(dist)
    started = time.monotonic()
    ws = runtime.prepare(cell.sources.dir, cell.sources.files, dist / ".work", prefix=cell.id.replace("/", "_") + ".")
    try:
        env = dict(REPRODUCIBLE_ENV)
        if runtime.build_path is None:  # the host: map the private folder to the fixed container path
            env["KCFLAGS"] = f"-ffile-prefix-map={ws.dir}={BUILD_MOUNT}"
        argv = make_argv(cell, ws.path, build_arch)
        run_argv, mounts = argv, ()
        if cell.signing and runtime.build_path:  # then sign with the kernel's own sign-file, key mounted
            sign = cell.signing.command(cell.kdir, f"{ws.path}/{cell.module.name}.ko")
            run_argv = ["sh", "-ec", '"$@"; exec ' + " ".join(map(shlex.quote, sign)), "kmod-build", *argv]
        if cell.pin and runtime.build_path:  # a pinned image: proven to hold the locked packages first
            run_argv = ["sh", "-c", images.check_script(), "kmod-check-image", *run_argv]
            env["KMOD_LOCKED_PACKAGES"] = "\n".join(images.installed(cell.pin))
        with contextlib.ExitStack() as stack:
            if cell.signing and runtime.build_path:
                secret = stack.enter_context(cell.signing.secret_dir(*runtime.build_user()))
                mounts = (Mount(secret, SECRET_MOUNT, True),)
            res = runtime.run(ws, run_argv, image=cell.image, env=env, mounts=mounts,
                              on_output=lambda t: progress.note(cell.id, t.splitlines()[-1] if t.strip() else ""))
        log_path = out / "build.log"
        header = f"# reproduce: {' '.join(argv)}\n# image: {cell.image or 'host'}\n"
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
            got = runtime.collect(ws, [ko_name], out) if res.exit_code == 0 else {}
        except UnsafeFile as e:
            # The build left a link or a special file where its module belongs: a build error, and
            # nothing of it is copied (a link could point at any host file).
            (out / ko_name).unlink(missing_ok=True)
            rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None, errors=[e.message],
                       diagnosis=[{"cause": "unsafe artifact", "line": e.message,
                                   "advice": "kmod never follows a link out of a build; see docs/security.md"}])
        else:
            if ko_name in got:
                rec.update(result="ok", ko=str((out / ko_name).relative_to(dist)), ko_sha256=got[ko_name],
                           diagnosis=[])
                if cell.signing:
                    from ..lint import signature
                    rec["signature"] = {"cert_sha256": cell.signing.cert_sha256,
                                        "state": signature.state((out / ko_name).read_bytes(), cell.signing.cert)}
            else:
                found = diagnose.diagnose(res.output)
                rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None,
                           errors=diagnose.relevant_lines(res.output),
                           diagnosis=[{"cause": d.cause, "line": d.line, "advice": d.advice} for d in found])
        rec["seconds"]["total"] = round(time.monotonic() - started, 3)
        return rec
    finally:
        runtime.cleanup(ws)


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
                detail = rec.get("ko") or (rec["diagnosis"][0]["cause"] if rec.get("diagnosis") else
                                           f"see {rec['log']}")
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
