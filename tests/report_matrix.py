"""A known matrix for the report's tests: every state each stage can be in, as manifest records of the
shape the stages write (docs/build.md), with the logs they point at. The tests derive what they expect
from CELLS, never from the page."""
import json
import time
from pathlib import Path

SPEC = ('[[module]]\nname = "clone_probe"\nsymbols = ["kernel_clone"]\n\n'
        '[[module]]\nname = "seed_kprobe"\nversion = "0.0.1"\nsymbols = ["kernel_clone"]\n')

# id: (build result, lint findings or None, boot verdict or None, extra fields)
CELLS = {
    "clone_probe/bookworm-6.1/x86_64": ("ok", [], ("pass", "", "", [41]), {}),
    "clone_probe/bookworm-6.1/arm64": ("ok", [("warning", "sleep-in-probe-handler", "msleep() reachable from handler_pre")],
                                       ("fail", "hits", "probe kernel_clone+0x0 never fired", [0]), {}),
    "clone_probe/trixie-6.12/x86_64": ("failed", None, None,
                                       {"diagnosis": [{"cause": "kprobe-fault-handler", "line": "error: 'struct kprobe' has no member named 'fault_handler'",
                                                       "advice": "struct kprobe has no fault_handler since Linux 5.14"}],
                                        "errors": ["seed_kprobe.c:99:12: error: 'struct kprobe' has no member named 'fault_handler'"],
                                        "exit_code": 2}),
    "clone_probe/bullseye-5.10/x86_64": ("failed", [("error", "fpu-unguarded", "xmm0 used outside kernel_fpu_begin/end in handler_pre")],
                                         None, {}),
    "seed_kprobe/bookworm-6.1/x86_64": ("interrupted", None, None, {"reason": "interrupted by SIGTERM"}),
    "seed_kprobe/bookworm-6.1/rt/arm64": ("excluded", None, None,
                                          {"flavour": "rt", "reason": "arches = [\"x86_64\"] in kmod.toml"}),
    "seed_kprobe/trixie-6.12/arm64": ("pending", None, None, {}),
}
VERSIONS = {"clone_probe": "0.1.0", "seed_kprobe": "0.0.1"}
PACKAGES = {
    "clone_probe": {"version": "0.1.0", "result": "ok", "reason": "", "at": 1795650100.0,
                    "formats": {"deb": {"path": "packages/clone-probe-dkms_0.1.0_all.deb", "seconds": 0.41,
                                        "lintian_warnings": 0},
                                "tarball": {"path": "packages/clone-probe-dkms-0.1.0.tar.gz", "seconds": 0.02,
                                            "lintian_warnings": None}}},
    "seed_kprobe": {"version": "0.0.1", "result": "failed", "reason": "lintian rejects seed-kprobe-dkms_0.0.1_all.deb",
                    "at": 1795650101.0, "formats": {}},
}

# What each host's last preflight said (the manifest's `preflight` section, kmod/preflight/report.py:
# manifest_record): a cell's preflight state is the worst verdict of the hosts that chose it.
PREFLIGHT = {
    "vm-a": {"host": "vm-a", "address": "root@10.0.0.1:22", "verdict": "pass", "error": "", "attention": "",
             "release": "6.1.0-56-amd64", "pin": "bookworm-6.1", "kernel_kind": "pinned", "at": 1795650200.0,
             "seconds": 0.4, "modules": [
                 {"module": "clone_probe", "verdict": "pass", "cell": "clone_probe/bookworm-6.1/x86_64",
                  "reason": "the built cell clone_probe/bookworm-6.1/x86_64 loads as is", "installed": False}]},
    "vm-b": {"host": "vm-b", "address": "root@10.0.0.2:22", "verdict": "warn", "error": "", "attention": "",
             "release": "6.1.0-56-amd64", "pin": "bookworm-6.1", "kernel_kind": "pinned", "at": 1795650200.0,
             "seconds": 0.5, "modules": [
                 {"module": "clone_probe", "verdict": "warn", "cell": "clone_probe/bookworm-6.1/x86_64",
                  "reason": "kptr_restrict=2 hides kallsyms: the probe targets were not checked", "installed": False},
                 {"module": "seed_kprobe", "verdict": "fail", "cell": "",
                  "reason": "no built cell matches 6.1.0-56-amd64", "installed": False}]},
    "vm-arm": {"host": "vm-arm", "address": "root@10.0.0.3:22", "verdict": "fail", "error": "", "attention": "",
               "release": "6.1.0-56-arm64", "pin": "bookworm-6.1", "kernel_kind": "pinned", "at": 1795650201.0,
               "seconds": 0.6, "modules": [
                   {"module": "clone_probe", "verdict": "fail", "cell": "clone_probe/bookworm-6.1/arm64",
                    "reason": "module.sig_enforce=1 and the built cell is unsigned", "installed": False}]},
    "vm-down": {"host": "vm-down", "address": "", "verdict": "error", "attention": "", "release": "", "pin": "",
                "error": "cannot connect to vm-down:22 (Connection refused)", "kernel_kind": "", "at": 1795650202.0,
                "seconds": 3.0, "modules": []},
}


def record(cell_id: str) -> dict:
    result, lint, boot, extra = CELLS[cell_id]
    parts = cell_id.split("/")
    module, kernel, arch = parts[0], parts[1], parts[-1]
    out = f"{module}/{kernel}/{arch}" if len(parts) == 3 else cell_id
    rec = {"module": module, "version": VERSIONS[module], "kernel": kernel, "arch": arch, "result": result,
           "release": f"{kernel.split('-')[1]}.0-56-{arch}", "image": f"kmod-toolchain:{kernel}-0123456789ab",
           "compiler": "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", "log": f"{out}/build.log",
           "seconds": {"container": 1.2, "total": 1.5 + len(cell_id) / 100}, "diagnosis": []}
    if result in ("ok", "failed") and lint is not None:
        rec["lint"] = [{"severity": s, "rule": r, "message": m} for s, r, m in lint]
    if result == "ok":
        rec.update(ko=f"{out}/{module}.ko", ko_sha256="ab" * 32)
    if boot:
        verdict, step, reason, hits = boot
        rec["boot"] = {"verdict": verdict, "step": step, "reason": reason, "excerpt": ["[ 1.0] insmod ok"],
                       "hits": hits, "kprobes": ["ffffffff81000000  k  kernel_clone+0x0    [FTRACE]"],
                       "taint_flags": "OE", "accel": "tcg", "trigger": "ls /",
                       "console": f"{out}/boot/console.log", "at": 1795650050.0,
                       "seconds": {"prepare": 0.3, "boot": 2.1, "test": 0.9, "vm": 3.0, "total": 3.4}}
    rec.update(extra)
    return rec


def write(root: Path) -> Path:
    """A project at `root` with the known matrix in dist/ (manifest and the logs it names)."""
    (root / "kmod.toml").write_text(SPEC)
    dist = root / "dist"
    cells = {cid: record(cid) for cid in CELLS}
    for rec in cells.values():
        for rel in (rec["log"], (rec.get("boot") or {}).get("console")):
            if rel:
                (dist / rel).parent.mkdir(parents=True, exist_ok=True)
                (dist / rel).write_text(f"# reproduce: make ...\nlog of {rel}\n")
    manifest = {"format": 1, "cells": cells, "packages": PACKAGES, "preflight": PREFLIGHT,
                "runs": [{"command": "invoke build --arch all", "started": time.time() - 5, "status": "running"}]}
    (dist / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dist / "manifest.json"
