"""The Debian archive, where every input of a build comes from, and how each byte is checked.

    mirror.py      which mirror: the host's apt configuration, or KMOD_MIRROR / KMOD_SECURITY_MIRROR
    release.py     a suite's signed Release (gpgv against Debian's keyring) and the indexes it vouches for
    resolve.py     `invoke toolchains --update`: read the verified indexes, pick each pin's packages, write the lock
    fetch.py       download a locked package into the cache, its sha256 checked against the lock
    debversion.py  Debian version ordering
"""
