"""The build matrix: modules x pinned kernels x flavours x arches, built in parallel, cached by inputs,
recorded in the manifest. A cell whose inputs are unchanged is a cache hit: no engine is even contacted."""
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import arch as archmod
from .. import atomic, paths, render, report
from .. import run as runmod
from ..flavour import GENERIC
from ..archive.fetch import sha256_file
from ..errors import BuildFailed, UserError
from ..nofollow import UnsafeFile
from ..manifest import Manifest, cell_lock
from ..parallel import parallel
from ..pins import Pin, require_locked
from ..progress import Progress
from ..spec import Module, Project
from . import collect, diagnose, dkmsbuild, images, signing
from .runtime import Mount, Runtime
from .runtime.base import CONTAINER_BUILD_PATH
from .signing import BuildSigning

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
    flavour: str = GENERIC
    image: str = ""
    signing: "BuildSigning | None" = None
    key: str = ""
    result: str = "pending"
    record: dict = field(default_factory=dict)
    dkms_conf: str = ""       # a hand-written module without a dkms.conf: the one kmod generates for it

    @property
    def kernel(self) -> str:
        """The kernel's label in ids and paths: the pin, PIN-FLAVOUR beyond generic, or "host"."""
        return self.pin.label(self.flavour) if self.pin else "host"

    def locked_packages(self) -> dict[str, str]:
        """basename -> sha256 of the locked packages this cell's kernel headers are made of."""
        if self.pin is None:
            return {}
        return {p.basename: p.sha256 for role in images.IMAGE_ROLES
                for p in self.pin.packages_for(role, self.arch, self.flavour)}

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
    kernel = {"release": cell.pin.release(cell.arch, cell.flavour), "packages": cell.locked_packages()} \
        if cell.pin else cell.kdir
    doc = {"recipe": RECIPE_VERSION, "sources": cell.sources.digest, "arch": cell.arch.name,
           "kernel": kernel, "image": cell.image,
           **command_doc(cell, build_arch), "env": REPRODUCIBLE_ENV,
           **({"signed_by": cell.signing.cert_sha256} if cell.signing else {})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan(project: Project, modules: list[Module], pins: list[Pin], arches: list[archmod.Arch],
         kdir: str | None = None, signing: "BuildSigning | None" = None,
         flavours: tuple[str, ...] = (GENERIC,)) -> list[Cell]:
    """Every module x pin x arch x flavour that is locked (a flavour the mirror does not ship for an arch
    is no cell; `invoke toolchains` lists the ones there are)."""
    build_arch = images.build_arch()
    cells, why = [], {}   # why: what ruled out a combination, for the one line when nothing is left
    for m in modules:
        sources = render.render(m, project.dist / m.name / "src")
        # the package's dkms.conf less its module list, [package.NAME] options included: the build
        # runs what dkms will run on the VM
        conf = (dkmsbuild.generated_conf(m, project)
                if m.source is not None and not dkmsbuild.own_conf(sources.files) else "")
        for a in arches:
            if m.arches and a.name not in m.arches:
                why.setdefault(f"module {m.name} limits `arches` to {', '.join(m.arches)}", None)
                continue
            if kdir:
                cells.append(Cell(m, None, a, sources, kdir, dkms_conf=conf))
                continue
            for p in pins:
                if a.name not in p.arches:
                    why.setdefault(f"{p.name} has no {a.name} kernel (Debian ships none)", None)
                    continue
                require_locked(p)
                for f in flavours:
                    if f in p.flavours and p.has(a, f):
                        cells.append(Cell(m, p, a, sources, p.kdir(a, f), f, image=images.tag(p), signing=signing,
                                          dkms_conf=conf))
                    else:
                        why.setdefault(f"{p.name} locks no {f} kernel for {a.name}", None)
    if not cells:
        reasons = list(why)
        shown = "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")
        raise UserError("nothing to build: " + (shown or "no module, kernel, flavour and arch combination matches"),
                        "check --module/--kernel/--flavour/--arch and the modules' `arches` "
                        "(`invoke toolchains` lists the kernels there are)")
    for c in cells:
        c.key = cell_key(c, build_arch)
    return cells


def state(cell: Cell, manifest: Manifest, dist: Path, lint: bool) -> str:
    """`cached` (nothing to do), `relint` (the .ko stands, its lint verdict does not: never linted, or
    linted under other rule data) or `build`."""
    rec = manifest.cell(cell.id)
    if not rec or rec.get("key") != cell.key or rec.get("result") not in ("ok", "excluded"):
        return "build"
    if not all((dist / k["ko"]).is_file() and sha256_file(dist / k["ko"]) == k["sha256"]
               for k in rec.get("kos") or []):
        return "build"
    if lint and rec.get("result") == "ok" and (rec.get("lint_state") != "linted"
                                               or rec.get("lint_rules") != paths.lint_fingerprint()):
        return "relint"
    return "cached"


def cached(cell: Cell, manifest: Manifest, dist: Path, lint: bool = False) -> bool:
    return state(cell, manifest, dist, lint) == "cached"


def build_one(cell: Cell, runtime: Runtime, dist: Path, build_arch: str, progress: Progress) -> dict:
    out = cell.out_dir(dist)
    started = time.monotonic()
    hand_written = cell.module.source is not None
    # A hand-written module's build folder is dkms's tree, its sources mounted beside it (dkmsbuild).
    ws = runtime.prepare(cell.sources.dir, [] if hand_written else cell.sources.files, runmod.work_dir(dist),
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
        if cell.pin and runtime.build_path:  # a pinned image: proven to hold the locked packages first
            run_argv = ["sh", "-c", images.check_script(), "kmod-check-image", *run_argv]
            env["KMOD_LOCKED_PACKAGES"] = "\n".join(images.installed(cell.pin))
        res = runtime.run(ws, run_argv, image=cell.image, env=env, mounts=mounts,
                          on_output=lambda t: progress.note(cell.id, t.splitlines()[-1] if t.strip() else ""))
        log_path = out / "build.log"
        header = f"# reproduce: {' '.join(shown)}\n# image: {cell.image or 'host'}\n"
        refused = images.refused_image(cell.pin, cell.image, res.exit_code, res.output) if cell.pin else ""
        atomic.write_text(log_path, header + (refused + "\n" if refused else res.output))
        rec = {"module": cell.module.name, "version": cell.module.version,
               "kernel": cell.pin.name if cell.pin else "host", "flavour": cell.flavour, "arch": cell.arch.name,
               "release": cell.pin.release(cell.arch, cell.flavour) if cell.pin else "",
               "key": cell.key, "inputs": {"sources": cell.sources.files, "kdir": cell.kdir,
                                           "pin_abi": cell.pin.abi(cell.arch, cell.flavour) if cell.pin else "",
                                           "pin_packages": cell.locked_packages()},
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
        cert = cell.signing.cert if cell.signing else None
        try:
            if hand_written:
                hand_written_result(cell, res, ws, out, dist, rec, cert)
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
                rec.update(result="ok", kos=[collect.record(out / ko_name, "", got[ko_name], dist, cert)],
                           diagnosis=[])
            else:
                found = diagnose.diagnose(res.output)
                rec.update(result="failed", exit_code=res.exit_code, ko=None, ko_sha256=None,
                           errors=diagnose.relevant_lines(res.output),
                           diagnosis=[{"cause": d.cause, "line": d.line, "advice": d.advice} for d in found])
        if rec.get("kos") and not cell.module.replaces_in_tree:
            refuse_in_tree_names(dist, rec)
        if rec.get("kos") and cell.signing and runtime.build_path:
            sign_cell(cell, runtime, dist, out, rec)
        if rec.get("kos"):  # the first .ko, for readers of a one-module record
            rec.update(ko=rec["kos"][0]["ko"], ko_sha256=rec["kos"][0]["sha256"])
            if cell.signing:  # the cell's state: "verifies" when every .ko does, else the first that does not
                states = [k["signature"] for k in rec["kos"]]
                rec["signature"] = {"cert_sha256": cell.signing.cert_sha256,
                                    "state": next((s for s in states if s != "verifies"), "verifies")}
        rec["seconds"]["total"] = round(time.monotonic() - started, 3)
        return rec
    finally:
        runtime.cleanup(ws)


def refuse_in_tree_names(dist: Path, rec: dict) -> None:
    """A hand-written folder may build a module named like one of the kernel's own (its Kbuild says
    `obj-m := ext4.o`, whatever the spec's name): installed to /updates/dkms, it would override the
    kernel's and may leave a VM unable to boot. The cell fails, as the spec's own name would be refused."""
    from .. import intree
    clash = [k for k in rec["kos"] if intree.normal(k["kernel_name"]) in intree.names()]
    if not clash:
        return
    line = (f"{clash[0]['ko'].rsplit('/', 1)[-1]} has the name of a module of the pinned kernels "
            f"({clash[0]['kernel_name']}): installed by dkms it would override the kernel's own")
    for k in rec["kos"]:
        (dist / k["ko"]).unlink(missing_ok=True)
    rec.update(result="failed", ko=None, ko_sha256=None, kos=[], errors=[line],
               diagnosis=[{"cause": "in-tree module name", "line": line,
                           "advice": "rename the module in its Kbuild/dkms.conf, or set replaces_in_tree = true "
                                     "in the spec if it replaces that module on purpose"}])


def sign_cell(cell: Cell, runtime: Runtime, dist: Path, out: Path, rec: dict) -> None:
    """Sign the cell's collected modules after its build (kmod.build.signing: the build never sees the
    key), as dkms signs after POST_BUILD; refresh their records, or fail the cell with sign-file's line."""
    from ..lint import signature
    names = [Path(k["ko"]).name for k in rec["kos"]]
    why = signing.sign_collected(cell.signing, runtime, cell.image, cell.kdir, out, names, runmod.work_dir(dist),
                                 prefix=cell.id.replace("/", "_") + ".sign.")
    if why:
        for k in rec["kos"]:
            (dist / k["ko"]).unlink(missing_ok=True)
        rec.update(result="failed", ko=None, ko_sha256=None, kos=[], errors=[why],
                   diagnosis=[{"cause": "signing failed", "line": why,
                               "advice": "check --sign-key/--sign-cert (an unencrypted PEM key and its certificate)"}])
        return
    for k in rec["kos"]:
        path = dist / k["ko"]
        k.update(sha256=sha256_file(path), signature=signature.state(path.read_bytes(), cell.signing.cert))


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
        release = cell.pin.release(cell.arch, cell.flavour)
        common = f"/usr/src/{cell.pin.package('headers-common', cell.arch, cell.flavour).name}"
        src, tree, headers = dkmsbuild.SRC_MOUNT, dkmsbuild.DKMS_TREE, [cell.kdir, common]
        mounts = (Mount(cell.sources.dir, src, True), Mount(ws.dir, tree, False),
                  Mount(dkmsbuild.lib_modules(ws.dir, cell.kdir, common), f"/lib/modules/{release}", True))
    conf = f"{src}/dkms.conf" if own else f"{tree}/{dkmsbuild.CONF_NAME}"
    env.update(dkmsbuild.env(cell, conf, "" if own else (cell.module.build_dir or "."), release, headers))
    env["KMOD_SRC"] = src
    return argv, mounts


def hand_written_result(cell: Cell, res, ws, out: Path, dist: Path, rec: dict, cert: Path | None) -> None:
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
            rec.update(result="ok", kos=collect.collect(ws.dir, dkmsbuild.built_modules(r), out, dist, cert),
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
    (the lint step) and return False to fail the cell; its verdict is part of the cell, so a cell
    built without it, or linted under other rule data, is linted again (not rebuilt).

    Other runs may build in the same project at once: each cell is built under its own lock
    (dist/.locks/), and a cell another run has just built is taken from the manifest, not rebuilt."""
    from . import runtime as runtimes
    dist = project.dist
    manifest = Manifest(dist / "manifest.json")
    lint = after_build is not None
    states = {c.id: state(c, manifest, dist, lint) for c in cells}
    todo = [c for c in cells if states[c.id] != "cached"]
    for c in cells:
        if c not in todo:
            c.result, c.record = "cached", manifest.cell(c.id)
    if not todo:
        report.write(project)
        return Outcome(cells, manifest)
    # No engine: fail before touching the manifest. Re-linting alone needs none.
    rt = runtimes.get(runtime_name) if any(states[c.id] == "build" for c in todo) else None
    build_arch = images.build_arch()
    manifest.start_run(command)
    runmod.reap_work_dirs(dist)
    stop = threading.Event()  # set on Ctrl-C/SIGTERM/SIGHUP or an error: what ends now is interrupted
    status, reason = "error", ""
    try:
        labels = (images.ensure_all(rt.client, [c.pin for c in todo if c.pin and states[c.id] == "build"], quiet)
                  if rt is not None and runtime_name == "docker" else {})
        with Progress("build", [c.id for c in cells], quiet) as prog:
            for c in cells:
                if c.result == "cached":
                    prog.update(c.id, "cached", c.record.get("ko", ""))

            def one(cell: Cell):
                waiting = lambda: prog.update(cell.id, "waiting", "another kmod run is building this cell")
                with cell_lock(dist, cell.id, stop, on_wait=waiting):
                    manifest.sync()  # what another run did while we waited
                    now = state(cell, manifest, dist, lint)
                    if now == "cached":
                        cell.result, cell.record = "cached", manifest.cell(cell.id)
                        prog.update(cell.id, "cached", cell.record.get("ko", ""))
                        return
                    prog.update(cell.id, "running")
                    if now == "relint":
                        rec = dict(manifest.cell(cell.id))
                    else:
                        manifest.update_cell(cell.id, result="running", key=cell.key, run=runmod.ID)
                        manifest.save()
                        rec = build_one(cell, rt, dist, build_arch, prog)
                        if stop.is_set():  # the container was removed under it: not the module's fault
                            return
                    if cell.image in labels:
                        rec["image_id"] = labels[cell.image]["id"]
                        rec["compiler"] = labels[cell.image].get("kmod.compiler", "")
                    rec.update(run=runmod.ID, lint_state="unlinted", lint_rules=None)
                    if rec["result"] == "ok" and after_build:
                        passed = after_build(cell, rec)
                        if stop.is_set():
                            return
                        rec.update(lint_state="linted", lint_rules=paths.lint_fingerprint())
                        if passed is False:
                            rec["result"] = "failed"
                    cell.result, cell.record = rec["result"], rec
                    manifest.set_cell(cell.id, rec)
                    manifest.save()
                detail = (rec.get("reason") or ", ".join(k["ko"] for k in rec.get("kos") or []) or
                          (rec["diagnosis"][0]["cause"] if rec.get("diagnosis") else f"see {rec['log']}"))
                prog.update(cell.id, rec["result"], f"{detail} ({rec['seconds']['total']:.1f}s)"
                            + (" re-linted" if now == "relint" else ""))

            parallel(one, todo, min(jobs or default_jobs(), len(todo)), on_abort=lambda: _abort(stop))
        status = "failed" if any(c.result == "failed" for c in cells) else "ok"
    except KeyboardInterrupt as e:
        status = "interrupted"
        reason = f"interrupted ({e})" if str(e) else "interrupted"
        raise
    except BaseException as e:
        status, reason = "error", f"stopped by an error elsewhere: {e}"
        raise
    finally:
        stop.set()
        if rt is not None:
            rt.cleanup()
        if status != "ok" and status != "failed":
            manifest.interrupt_unfinished([c.id for c in todo], reason)
            for c in todo:
                if c.result == "pending":
                    c.result = "interrupted"
        manifest.finish_run(status)
        runmod.remove_work_dir(dist)
        report.write(project)
    return Outcome(cells, manifest)


def _abort(stop: threading.Event) -> None:
    """Ctrl-C, SIGTERM, SIGHUP or an error: end what every worker waits on, so that none keeps the exit
    waiting (the interpreter joins them before it exits): the build containers, and the VM of a probe map
    that a cell's lint may be booting for its pin (up to minutes on first use)."""
    import sys
    from .runtime import docker as rtdocker
    stop.set()
    rtdocker.remove_all()
    if "kmod.boot.qemu" in sys.modules:   # no lint has booted anything otherwise
        sys.modules["kmod.boot.qemu"].kill_all(stop=True)
