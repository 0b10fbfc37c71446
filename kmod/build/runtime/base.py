from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass
class Result:
    exit_code: int
    output: str
    seconds: float = 0.0


class Runtime:
    name = "base"

    def run(self, argv: list[str], *, image: str | None, mounts: list[Mount], env: dict[str, str],
            workdir: str, network: bool = False, user: str | None = None,
            timeout: float | None = None, on_output=None) -> Result:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass
