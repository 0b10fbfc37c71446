"""The Debian mirror, read from the host's apt configuration; never hard-coded.

Override with KMOD_MIRROR (main archive) and KMOD_SECURITY_MIRROR (security archive).
"""
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import InfraError, UserError

APT_DIR: Path | None = None  # tests point it elsewhere; else $KMOD_APT_DIR, else /etc/apt (read when used)
URI_RE = re.compile(r"^(?:https?://[A-Za-z0-9.\[\]:@-]+|file://)/[\x21-\x7e]*$")


@dataclass(frozen=True)
class Mirror:
    main: str
    security: str

    def archives(self, suite: str) -> list[tuple[str, str]]:
        """(base URI, suite) for every archive a suite's packages come from, newest last."""
        return [(self.main, suite), (self.main, f"{suite}-updates"), (self.security, f"{suite}-security")]

    def sources_deb822(self, suite: str) -> str:
        """An apt sources file for `suite`, as copied into toolchain images."""
        return "".join(
            f"Types: deb\nURIs: {uri}\nSuites: {s}\nComponents: main\n"
            f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            for uri, s in self.archives(suite))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""  # an unreadable sources file adds no mirror; apt would skip it too


def _entries() -> list[tuple[str, list[str]]]:
    """(URI, suites) pairs from deb822 .sources files and one-line .list files."""
    apt_dir = APT_DIR or Path(os.environ.get("KMOD_APT_DIR") or "/etc/apt")
    entries = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read(path)):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                for uri in fields.get("URIs", "").split():
                    entries.append((uri, fields.get("Suites", "").split()))
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in _read(path).splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    entries.append((m.group(1), [m.group(2)]))
    return entries


@cache
def configured() -> Mirror:
    main = os.environ.get("KMOD_MIRROR")
    security = os.environ.get("KMOD_SECURITY_MIRROR")
    for uri, suites in _entries():
        if any(s.endswith("-security") for s in suites):
            security = security or uri
        elif "debian" in uri:
            main = main or uri
    if not main:
        raise InfraError("no Debian mirror found in the host's apt configuration",
                         "set KMOD_MIRROR=http://YOUR-MIRROR/debian")
    if not security:
        security = re.sub(r"/debian/?$", "/debian-security", main.rstrip("/"))
    for name, uri in (("KMOD_MIRROR", main), ("KMOD_SECURITY_MIRROR", security)):
        if not URI_RE.fullmatch(uri):
            raise UserError(f"{name}={uri!r} is not a mirror URL" if os.environ.get(name) == uri else
                            f"the apt configuration's mirror {uri!r} is not an http(s) or file URL",
                            f"set {name} like http://YOUR-MIRROR/debian or file:///srv/mirror/debian")
    return Mirror(main.rstrip("/"), security.rstrip("/"))
