"""One loader for the data folders whose files each describe one thing by name (toolchains/arch/*.toml,
toolchains/flavours/*.toml): read every file, build an object from each, look names up with one error
for the rest ("unsupported architecture: 'sparc' (choose one of: ...)")."""
import tomllib
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from .errors import UserError, unsupported

T = TypeVar("T")


def load_folder(folder: Path, build: Callable[[dict, Path], T]) -> dict[str, T]:
    """name -> build(data, path) for every *.toml in `folder`, in file-name order."""
    out: dict[str, T] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
            item = build(data, path)
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path} is not a valid data file ({type(e).__name__}: {e})",
                            "restore it from git") from None
        out[item.name] = item
    return out


def lookup(items: dict[str, T], name: str, what: str, names_of: Callable[[T], Iterable[str]]) -> T:
    """The item called `name` by its own name or any of `names_of(item)`."""
    if name in items:
        return items[name]
    for item in items.values():
        if name in names_of(item):
            return item
    raise unsupported(what, name, list(items))


def select(items: dict[str, T], spec: str | None, get: Callable[[str], T], flag: str = "") -> list[T]:
    """`all` (or nothing), one name, or a comma list. What resolves to the same item is kept once:
    `--kernel 6.1,bookworm` is one pin, not two parallel builds of it."""
    if spec in ("all", "", None):
        return list(items.values())
    parts = [p.strip() for p in spec.split(",")]
    if not all(parts):
        raise UserError(f"{flag or 'the list'} {spec!r} has an empty name", "separate names with single commas")
    out = []
    for part in parts:
        item = get(part)
        if item not in out:
            out.append(item)
    return out
