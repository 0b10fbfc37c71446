"""DKMS packages (.deb, .rpm, source tarball) of the modules in a spec, in dist/packages/.

Everything that can be refused is refused before anything is written: names and versions, the
[package.MODULE] options, the signing paths, missing tools, and a module whose last build or lint
failed (unless force). Then each format is built from one Payload (payload.py)."""
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import run as runmod
from ..errors import BuildFailed, UserError
from ..manifest import Manifest
from ..spec import Module, Project
from . import deb, dkms, rpm, tarball, tools
from . import payload as payloadmod

FORMATS = {"deb": deb, "rpm": rpm, "tarball": tarball}
TOOLS = {"deb": "dpkg-deb", "rpm": "rpmbuild"}


@dataclass
class Built:
    module: str
    format: str
    path: Path
    seconds: float
    lintian: list[str] | None = None  # lintian's tags when it ran (errors never get here)


def parse_formats(text: str) -> list[str]:
    names = [f.strip() for f in (text or "deb,rpm,tarball").split(",") if f.strip()]
    if not names:
        raise UserError(f"--format {text!r} names no package format", f"choose from: {', '.join(FORMATS)}")
    for n in names:
        if n not in FORMATS:
            raise UserError(f"unknown package format {n!r}", f"choose from: {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def failures(project: Project, module: Module) -> list[str]:
    """Why the manifest says this module is not fit to ship: a cell whose last build or lint failed, or
    that was never linted (built with --no-lint). An interrupted cell is neither: it blocks nothing."""
    from .. import paths
    manifest = Manifest(project.dist / "manifest.json")
    rules = paths.lint_fingerprint()
    why = []
    for cell_id, rec in sorted(manifest.cells.items()):
        if cell_id.split("/", 1)[0] != module.name:
            continue
        lint_errors = [f for f in rec.get("lint") or [] if isinstance(f, dict) and f.get("severity") == "error"]
        if rec.get("result") == "failed" or lint_errors:
            what = f"lint {lint_errors[0].get('rule', '')}" if lint_errors else "build"
            why.append(f"{cell_id} ({what} failed)")
        elif rec.get("result") == "ok" and rec.get("lint_state") == "unlinted":
            why.append(f"{cell_id} (never linted: built with --no-lint)")
        elif rec.get("result") == "ok" and rec.get("lint_state") == "linted" and rec.get("lint_rules") != rules:
            # the verdict was given under other rule data: `invoke build` lints it again (no rebuild)
            why.append(f"{cell_id} (linted under older lint rules: run `invoke build` to lint it again)")
    return why


def check_manifest(project: Project, modules: list[Module], force: bool) -> None:
    for m in modules:
        bad = failures(project, m)
        if bad and not force:
            more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
            raise UserError(f"refusing to package {m.name}: {', '.join(bad[:2])}{more}",
                            "fix and rebuild (`invoke build`, which lints), or pass --force to package it anyway")


def package(project: Project, modules: list[Module], formats: list[str], force: bool = False,
            signing: dkms.Signing | None = None, lint: bool = True, out_dir: Path | None = None,
            log=lambda s: None, warn=lambda s: None) -> list[Built]:
    for f in formats:
        if f in TOOLS:
            tools.require(TOOLS[f], f"to build the .{f}")
    if lint and "deb" in formats:
        tools.require("lintian", "to check the .deb; or pass --no-lintian")
    check_manifest(project, modules, force)
    payloads = [payloadmod.build(project, m, signing) for m in modules]  # every refusal happens here
    for p in payloads:
        for w in p.warnings:
            warn(f"{p.module.name}: {w}")
    out_dir = Path(out_dir or project.dist / "packages")
    out_dir.mkdir(parents=True, exist_ok=True)
    runmod.reap_work_dirs(project.dist)
    work = Path(tempfile.mkdtemp(prefix="package.", dir=runmod.work_dir(project.dist)))
    staging = work / "out"
    staging.mkdir()
    built = []
    try:
        for p in payloads:
            try:
                for f in formats:
                    start = time.monotonic()
                    path = FORMATS[f].build(p, staging, work)
                    built.append(Built(p.module.name, f, path, time.monotonic() - start))
                    if f == "deb" and lint:
                        built[-1].lintian = run_lintian(path)
            except BuildFailed as e:
                record(project, p.module, [], e.message)  # all or nothing: none of its packages shipped
                raise
        # All or nothing: only a complete, checked set leaves the staging folder (renames cannot fail
        # half-way for want of space).
        for b in built:
            b.path = out_dir / b.path.name
            os.replace(staging / b.path.name, b.path)
            log(f"{b.module}: {b.path}")
        for p in payloads:
            record(project, p.module, [b for b in built if b.module == p.module.name])
    finally:
        runmod.remove_work_dir(project.dist)
    return built


def record(project: Project, module: Module, built: list[Built], failure: str = "") -> None:
    """What this run packaged of `module`, into the manifest (and so into dist/report.html)."""
    from .. import report

    def where(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(project.dist.resolve()))
        except ValueError:
            return str(path)
    manifest = Manifest(project.dist / "manifest.json")
    manifest.set_package(module.name, {
        "version": module.version, "result": "failed" if failure else "ok", "reason": failure, "at": time.time(),
        "formats": {b.format: {"path": where(b.path), "seconds": round(b.seconds, 3),
                               "lintian_warnings": (sum(t.startswith("W:") for t in b.lintian)
                                                    if b.lintian is not None else None)} for b in built}})
    manifest.save()
    report.write(project)


def run_lintian(path: Path) -> list[str]:
    """lintian's tags for a .deb; an error tag fails the packaging (exit 2)."""
    import shutil
    import subprocess
    exe = tools.require("lintian")
    # lintian leaves its ELF index databases (mldbm-elf-*) in TMPDIR: give it a folder that goes with it
    tmp = str(runmod.scratch_dir("lintian"))
    try:
        proc = subprocess.run([exe, "--no-cfg", "--tag-display-limit", "0", str(path)], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": tmp,
                                              "TMPDIR": tmp})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tags = [ln for ln in proc.stdout.splitlines() if ln[:2] in ("E:", "W:", "I:", "P:", "X:")]
    errors = [t for t in tags if t.startswith("E:")]
    if errors or proc.returncode not in (0, 1) and not tags:
        raise BuildFailed(f"lintian rejects {path.name}: {' | '.join(errors[:3]) or proc.stderr.strip()[-200:]}")
    return tags
