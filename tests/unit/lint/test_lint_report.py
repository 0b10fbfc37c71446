"""The public API: lint_paths over directories, the cache, exit codes and the three formats."""
import json
import os

import pytest

from kmod.errors import UserError
from kmod.lint import format_json, format_sarif, format_text, lint_paths

from .conftest import asm_fp


@pytest.fixture
def tree(tmp_path, build):
    d = tmp_path / "mods"
    (d / "sub").mkdir(parents=True)
    bad = build("x86_64", f"int init_module(void) {{ {asm_fp('x86_64')}; return 0; }}\nvoid cleanup_module(void) {{}}")
    warn = build("x86_64", "int init_module(void) { return 0; }")
    clean = build("arm64", "int init_module(void) { return 0; }\nvoid cleanup_module(void) {}")
    bad.rename(d / "bad.ko")
    warn.rename(d / "sub" / "warn.ko")
    clean.rename(d / "clean.ko")
    (d / "notes.txt").write_text("not a module, not picked up")
    return d


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KMOD_CACHE", str(tmp_path / "cache"))


def test_directory_and_exit_codes(tree):
    report = lint_paths([tree], jobs=2)
    names = sorted(os.path.basename(m.path) for m in report.modules)
    assert names == ["bad.ko", "clean.ko", "warn.ko"]
    assert report.worst() == "error"
    assert report.exit_code("error") == 2
    warn_only = lint_paths([tree / "sub"], jobs=1)
    assert warn_only.worst() == "warning"
    assert warn_only.exit_code("error") == 0 and warn_only.exit_code("warning") == 2
    clean = lint_paths([tree / "clean.ko"])
    assert clean.worst() is None and clean.exit_code("warning") == 0
    with pytest.raises(UserError):
        clean.exit_code("fatal")


def test_cache_serves_the_rerun(tree):
    first = lint_paths([tree], jobs=2)
    assert first.cached == 0
    again = lint_paths([tree], jobs=2)
    assert again.cached == 3
    assert format_json(again) == format_json(first)
    # a changed file is linted again, the others still come from the cache
    (tree / "clean.ko").write_bytes((tree / "sub" / "warn.ko").read_bytes() + b"\0" * 8)
    third = lint_paths([tree], jobs=2)
    assert third.cached == 2
    assert [f.rule for m in third.modules if m.path.endswith("clean.ko") for f in m.findings] == ["no-module-exit"]


def test_empty_directory_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        lint_paths([tmp_path / "empty"])


def test_json_schema(tree):
    doc = json.loads(format_json(lint_paths([tree])))
    assert set(doc) == {"modules", "order"}
    bad = next(m for m in doc["modules"] if m["path"].endswith("bad.ko"))
    assert bad["arch"] == "x86_64"
    f = bad["findings"][0]
    assert {"rule", "severity", "function", "address", "message"} <= set(f)
    assert f["rule"] == "fpu-unguarded" and f["severity"] == "error" and f["function"] == "init_module"
    assert f["address"].startswith("0x")


def test_sarif(tree):
    doc = json.loads(format_sarif(lint_paths([tree])))
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert "fpu-unguarded" in ids and "no-module-exit" in ids
    levels = sorted(r["level"] for r in run["results"])
    assert levels == ["error", "warning"]
    for r in run["results"]:
        assert ids[r["ruleIndex"]] == r["ruleId"]
        assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]


def test_text(tree):
    text = format_text(lint_paths([tree]))
    assert "bad.ko: error: fpu-unguarded [init_module .text+0x" in text
    assert text.rstrip().endswith("3 module(s) linted: 1 error(s), 1 warning(s), 0 info(s)")


def test_cli_run_exit_codes_and_one_line_errors(tree, tmp_path):
    import io

    from kmod.lint.cli import run
    out, err = io.StringIO(), io.StringIO()
    assert run([str(tree)], fmt="json", out=out, err=err) == 2
    assert json.loads(out.getvalue())["modules"] and err.getvalue() == ""
    assert run([str(tree / "sub")], fail_on="warning", out=io.StringIO(), err=err) == 2
    assert run([str(tree / "clean.ko")], out=io.StringIO(), err=err) == 0
    for args, kwargs in [([str(tmp_path / "missing.ko")], {}), ([str(tree)], {"target": "no-such-pin"}),
                         ([str(tree)], {"fmt": "xml"}), ([str(tree)], {"fail_on": "fatal"}), ([], {})]:
        err = io.StringIO()
        assert run(args, out=io.StringIO(), err=err, **kwargs) == 1
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in lines[0]
