"""The Debian mirror, read from the host's apt configuration; never hard-coded.

Override with KMOD_MIRROR (main archive) and KMOD_SECURITY_MIRROR (security archive).
"""
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import InfraError

APT_DIR = Path(os.environ.get("KMOD_APT_DIR", "/etc/apt"))


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


def _entries() -> list[tuple[str, list[str]]]:
    """(URI, suites) pairs from deb822 .sources files and one-line .list files."""
    entries = []
    for path in sorted((APT_DIR / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                for uri in fields.get("URIs", "").split():
                    entries.append((uri, fields.get("Suites", "").split()))
    for path in [APT_DIR / "sources.list", *sorted((APT_DIR / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
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
    return Mirror(main.rstrip("/"), security.rstrip("/"))
