"""CI installs kmod's Python dependencies from requirements.lock, exact versions and hashes (issue 8, item 8)."""
import tomllib

from packaging.requirements import Requirement

from tests.conftest import ROOT


def locked() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            spec, _, digest = line.partition(" --hash=sha256:")
            name, _, version = spec.partition("==")
            assert len(digest) == 64 and version, line
            out[name.lower()] = version
    return out


def test_every_declared_dependency_is_locked_within_its_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = locked()
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        assert req.name.lower() in lock, f"{req.name} is not in requirements.lock (run scripts/lock-python)"
        assert req.specifier.contains(lock[req.name.lower()]), f"{req.name} {lock[req.name.lower()]} breaks {req}"


def test_private_api_users_have_an_upper_bound():
    """kmod/lint/decode.py reads capstone's private _cs_insn: a major release may change it."""
    deps = {Requirement(d).name: Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert "_cs_insn" in (ROOT / "kmod/lint/decode.py").read_text()
    assert not deps["capstone"].specifier.contains("6.0")
    assert "lief" not in deps  # measured, unused: dropped (docs/benchmarks.md, LIEF)
