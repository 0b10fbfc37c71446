"""Tasks of the build stage: `build`, `render`, `toolchains`."""
import json
import sys
from pathlib import Path

from invoke.exceptions import Exit

from .args import task
from .common import COMMON_HELP, FLAVOUR_HELP, cli_errors, command_line, count, output_folder

@task(help={**COMMON_HELP,
            "flavour": FLAVOUR_HELP,
            "symbol": "probe these symbols instead of the spec's (comma list; NAME or NAME+OFFSET)",
            "runtime": "docker (default) or host (local tools; needs --kdir)",
            "kdir": "kernel build tree for --runtime host (e.g. /lib/modules/$(uname -r)/build)",
            "jobs": "parallel builds (default: number of cores)",
            "no_lint": "skip the lint step after each build",
            "sign_key": "sign every pinned build with this PEM private key (kernel's sign-file, in the container)",
            "sign_cert": "the PEM certificate of --sign-key (recorded by its sha256 in the manifest)",
            "boot_test": "boot-test every built cell in QEMU afterwards"})
@cli_errors
def build(c, arch="all", kernel="all", flavour="generic", module="", symbol="", spec="", runtime="docker", kdir="",
          jobs="", no_lint=False, boot_test=False, sign_key="", sign_cert=""):
    """Render, build (and lint) modules for pinned kernels and arches; artifacts in dist/."""
    from .. import arch as archmod
    from .. import build as buildmod
    from .. import flavour as flavourmod
    from .. import pins as pinsmod
    from .. import spec as specmod
    from ..build import runtime as runtimes
    from ..build.signing import BuildSigning
    from ..errors import UserError
    from .boot import boot_timeout
    # Every flag is checked before anything is written.
    jobs = count(jobs, "--jobs")
    timeout = boot_timeout("") if boot_test else None  # a bad $KMOD_BOOT_TIMEOUT stops us before building
    runtimes.check(runtime)
    if kdir and runtime != "host":
        raise UserError("--kdir is for --runtime host", "add --runtime host, or drop --kdir to build in the pinned images")
    if runtime == "host":
        if sign_key or sign_cert:
            raise UserError("--sign-key/--sign-cert sign pinned builds in their container", "drop --runtime host")
        if not kdir:
            raise UserError("--runtime host needs --kdir", "e.g. --kdir /lib/modules/$(uname -r)/build")
        if not (Path(kdir) / "Makefile").is_file():
            raise UserError(f"{kdir} is not a kernel build tree (no Makefile)", "point --kdir at the headers of the target kernel")
    signing = None if runtime == "host" else BuildSigning.from_flags(sign_key, sign_cert)
    arches = archmod.select(arch)
    pins = [] if runtime == "host" else pinsmod.select(kernel)
    flavours = tuple(f.name for f in flavourmod.select(flavour))
    project = specmod.load(specmod.find(spec or None))
    modules = [specmod.with_overrides(m, symbol) for m in project.select(module or None)]
    output_folder(project)
    cells = buildmod.plan(project, modules, pins, arches, kdir=kdir or None, signing=signing, flavours=flavours)
    _warn_skipped({c.module.name: c.sources for c in cells}.values())
    hook = None if no_lint else _lint_hook(project)
    outcome = buildmod.run(project, cells, runtime, jobs, command_line(), after_build=hook)
    _report_build(project, outcome)
    code = outcome.exit_code
    if boot_test and code == 0:
        from .. import boot
        code = boot.run_for_cells(project, outcome.cells, timeout)
    if code:
        raise Exit(code=code)


def _warn_skipped(all_sources) -> None:
    for src in all_sources:
        for what in src.skipped:
            print(f"warning: {src.module.name}: left out of the sources: {what}", file=sys.stderr)


def _lint_hook(project):
    def hook(cell, rec):
        from .. import lint  # only when something was built: a cache hit never pays for the import
        # every .ko of the cell at once: a sibling's exports resolve the others' symbols, as modprobe
        # would load it first
        kos = [project.dist / k["ko"] for k in (rec.get("kos") or [{"ko": rec["ko"]}])]
        # a signing build's lint verifies what it signed: a .ko that does not verify against the
        # certificate (signature-absent, signature-invalid) fails the cell
        report = lint.lint_paths(kos, target=cell.pin.label(cell.flavour) if cell.pin else None,
                                 jobs=1, probes=[str(p) for p in cell.module.probes] or None,
                                 cert=str(cell.signing.cert) if cell.signing else None)
        rec["lint"] = [{"rule": f.rule, "severity": f.severity, "message": f.message,
                        **({"ko": str(Path(m.path).relative_to(project.dist))} if len(kos) > 1 else {})}
                       for m, f in report.findings()]
        if len(kos) > 1:
            rec["load_order"] = [str(Path(p).relative_to(project.dist)) for p in report.order]
        return report.exit_code("error") == 0
    return hook


def _report_build(project, outcome):
    for c in outcome.cells:
        rec = c.record or {}
        if c.result == "failed":
            print(f"FAILED {c.id} (log: {project.dist / rec.get('log', '')})", file=sys.stderr)
            for line in rec.get("errors", [])[:6]:
                print(f"    {line}", file=sys.stderr)
            for d in rec.get("diagnosis", []):
                print(f"  why: {d['advice']}", file=sys.stderr)
            for f in rec.get("lint", []):
                if f["severity"] == "error":
                    print(f"  lint {f['rule']}: {f['message']}", file=sys.stderr)
        elif (rec.get("result") == "excluded"):
            print(f"excluded {c.id}: {rec.get('reason', '')}", file=sys.stderr)
        for w in (rec.get("dkms") or {}).get("warnings", []):
            print(f"warning: {c.id}: {w}", file=sys.stderr)
    ok = sum(c.result in ("ok", "cached") and (c.record or {}).get("result") != "excluded" for c in outcome.cells)
    cached = sum(c.result == "cached" for c in outcome.cells)
    excluded = sum((c.record or {}).get("result") == "excluded" for c in outcome.cells)
    print(f"{ok}/{len(outcome.cells)} built ({cached} cached" + (f", {excluded} excluded by BUILD_EXCLUSIVE"
          if excluded else "") + f"), manifest: {outcome.manifest.path}")


@task(help={"module": COMMON_HELP["module"], "spec": COMMON_HELP["spec"],
            "symbol": "probe these symbols instead of the spec's (comma list)"})
@cli_errors
def render(c, module="", symbol="", spec=""):
    """Render module sources into dist/MODULE/src without building."""
    from .. import render as rendermod
    from .. import spec as specmod
    project = specmod.load(specmod.find(spec or None))
    selected = [specmod.with_overrides(m, symbol) for m in project.select(module or None)]
    output_folder(project)
    for m in selected:
        src = rendermod.render(m, project.dist / m.name / "src")
        _warn_skipped([src])
        print(f"{m.name}: {src.dir} ({', '.join(src.files)})")


@task(help={"update": "resolve each arch and flavour's newest downloadable ABI from the mirror and rewrite the lock",
            "tools_only": "with --update: lock the images' base system and compilers anew, keep the kernels",
            "build": "build the toolchain images of the selected pins now",
            "kernel": COMMON_HELP["kernel"], "arch": COMMON_HELP["arch"],
            "flavour": "a kernel flavour (toolchains/flavours/), a comma list, or all (default: all)",
            "json": "print the cells as JSON",
            "readme": "rewrite the support table in README.md from the data"})
@cli_errors
def toolchains(c, update=False, build=False, kernel="all", arch="all", flavour="all", json_=False, readme=False,
               tools_only=False):
    """Every pinned kernel x flavour x arch and its state (locked ABI, image); update the lock; build images."""
    from .. import arch as archmod
    from .. import flavour as flavourmod
    from .. import pins as pinsmod
    from .. import support
    from ..build import images
    selected = pinsmod.select(kernel)
    if update:
        from ..archive import resolve
        for name, kernels in resolve.update(selected, log=lambda s: print(s, file=sys.stderr),
                                            tools_only=tools_only).items():
            for a, flavours in kernels.items():
                print(f"{name}/{a}: " + ", ".join(f"{f} {abi}" for f, abi in flavours.items()))
        selected = pinsmod.select(kernel)
    if build:
        from ..build.runtime.docker import client as docker_client
        images.ensure_all(docker_client(), [pinsmod.require_locked(p) for p in selected])
    if readme:
        _write_readme(support.readme_table(list(pinsmod.all_pins().values())))
    state = _image_states(selected)
    cells = support.cells(selected, archmod.select(arch), flavourmod.select(flavour))
    rows = [{**c.to_dict(), "image": images.tag(c.pin) if c.pin.locked else "",
             "image_built": state.get(c.pin.name)} for c in cells]
    if json_:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(box=None)
    for col in ("kernel", "flavour", "arch", "suite", "ABI", "compiler", "image", "state"):
        t.add_column(col, no_wrap=True)
    states = {True: "[green]image built[/]", False: "[yellow]image not built[/]", None: "[dim]no engine[/]"}
    for r in rows:
        shown = states[r["image_built"]] if r["state"] == support.LOCKED else f"[dim]{r['state']}[/]"
        t.add_row(r["kernel"], r["flavour"], r["arch"], r["suite"], r["abi"] or "-", r["compiler"],
                  r["image"].split(":", 1)[-1], shown)
    Console(width=max(120, Console().width)).print(t)


def _write_readme(table: str) -> None:
    from .. import atomic, paths, support
    from ..errors import UserError
    readme = paths.PACKAGE.parent / "README.md"
    if not readme.is_file():
        raise UserError(f"no README.md beside {paths.PACKAGE}", "run it in a kmod checkout")
    text = readme.read_text()
    new = support.with_readme_table(text, table)
    if new != text:
        atomic.write_text(readme, new)
        print(f"updated the support table in {readme}", file=sys.stderr)


def _image_states(selected) -> dict:
    from ..build import images
    from ..errors import InfraError
    from ..build.runtime.docker import client as docker_client
    try:
        client = docker_client()
    except InfraError:
        return {}
    return {p.name: bool(p.locked and images.find(client, images.tag(p))) for p in selected}
