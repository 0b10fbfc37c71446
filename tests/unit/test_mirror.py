from kmod.archive import mirror


def configured(tmp_path, monkeypatch, files: dict[str, str]):
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(mirror, "APT_DIR", tmp_path)
    monkeypatch.delenv("KMOD_MIRROR", raising=False)
    monkeypatch.delenv("KMOD_SECURITY_MIRROR", raising=False)
    mirror.configured.cache_clear()
    try:
        return mirror.configured()
    finally:
        mirror.configured.cache_clear()


def test_deb822(tmp_path, monkeypatch):
    m = configured(tmp_path, monkeypatch, {"sources.list.d/debian.sources":
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"})
    assert m == mirror.Mirror("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert [s for _, s in m.archives("trixie")] == ["trixie", "trixie-updates", "trixie-security"]
    assert "Suites: trixie-security" in m.sources_deb822("trixie")


def test_one_line_format_and_derived_security(tmp_path, monkeypatch):
    m = configured(tmp_path, monkeypatch, {"sources.list": "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n"})
    assert m.main == "http://m.example/debian"
    assert m.security == "http://m.example/debian-security"


def test_override(tmp_path, monkeypatch):
    monkeypatch.setenv("KMOD_MIRROR", "http://local/debian/")
    (tmp_path / "sources.list.d").mkdir()
    monkeypatch.setattr(mirror, "APT_DIR", tmp_path)
    mirror.configured.cache_clear()
    try:
        assert mirror.configured().main == "http://local/debian"
    finally:
        mirror.configured.cache_clear()


def test_no_mirror_is_one_clear_error(tmp_path, monkeypatch):
    import pytest
    from kmod.errors import InfraError
    with pytest.raises(InfraError, match="KMOD_MIRROR"):
        configured(tmp_path, monkeypatch, {})
