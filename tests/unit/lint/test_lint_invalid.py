"""Bad input: exactly one invalid-elf finding with the reason, never a traceback or a hang."""
import lzma
import struct

import pytest

from kmod.lint import lint_file, lint_paths
from kmod.lint.engine import lint_bytes
from tests.conftest import need_tool


def only_invalid(result):
    assert [f.rule for f in result.findings] == ["invalid-elf"], result.findings
    assert result.findings[0].severity == "error"
    return result.findings[0].message


@pytest.fixture
def good(build):
    return build("x86_64", "int init_module(void) { return 0; }\nvoid cleanup_module(void) {}").read_bytes()


def test_empty(tmp_path):
    p = tmp_path / "empty.ko"
    p.write_bytes(b"")
    assert "empty file" in only_invalid(lint_file(p, strict=True))


def test_not_elf(tmp_path):
    p = tmp_path / "text.ko"
    p.write_text("#!/bin/sh\necho not a module\n")
    assert "not an ELF file" in only_invalid(lint_file(p, strict=True))


def test_wrong_class(good):
    assert "32-bit" in only_invalid(lint_bytes(good[:4] + b"\x01" + good[5:], "m.ko", strict=True))


def test_byte_order(good):
    # big-endian is a byte order kmod reads (s390x): a little-endian file read as one is garbage, said so
    only_invalid(lint_bytes(good[:5] + b"\x02" + good[6:], "m.ko", strict=True))
    assert "unknown byte order" in only_invalid(lint_bytes(good[:5] + b"\x03" + good[6:], "m.ko", strict=True))


def test_not_relocatable(good):
    assert "not a relocatable object" in only_invalid(
        lint_bytes(good[:16] + struct.pack("<H", 3) + good[18:], "m.ko", strict=True))


@pytest.mark.parametrize("cut", [17, 63, 64, 200, -1, -64, -200])
def test_truncated(good, cut):
    only_invalid(lint_bytes(good[:cut], "m.ko", strict=True))


def test_corrupt_section_table(good):
    shoff = struct.unpack_from("<Q", good, 40)[0]
    bad = bytearray(good)
    struct.pack_into("<Q", bad, shoff + 64 + 24, 1 << 40)  # section 1 offset far past the end
    assert "past the end" in only_invalid(lint_bytes(bytes(bad), "m.ko", strict=True))


def test_unsupported_machine(good):
    r = lint_bytes(good[:18] + struct.pack("<H", 8) + good[20:], "m.ko", strict=True)   # EM_MIPS
    assert [f.rule for f in r.findings] == ["unsupported-arch"]


def test_compressed_modules(tmp_path, good):
    (tmp_path / "a.ko.xz").write_bytes(lzma.compress(good, format=lzma.FORMAT_XZ))
    (tmp_path / "b.ko.xz").write_bytes(b"\xfd7zXZ\x00garbage")
    report = lint_paths([tmp_path], jobs=1, use_cache=False)
    by_name = {m.path.rsplit("/", 1)[-1]: m for m in report.modules}
    assert by_name["a.ko.xz"].findings == [] and by_name["a.ko.xz"].arch == "x86_64"
    assert "decompress" in only_invalid(by_name["b.ko.xz"])


def test_zstd_module(tmp_path, good):
    import subprocess
    need_tool("zstd")
    raw = tmp_path / "c.ko"
    raw.write_bytes(good)
    subprocess.run(["zstd", "-q", str(raw), "-o", str(tmp_path / "c.ko.zst")], check=True)
    raw.unlink()
    report = lint_paths([tmp_path], jobs=1, use_cache=False)
    assert report.modules[0].arch == "x86_64" and report.modules[0].findings == []
