"""Compiler and modpost output -> the few lines that matter and what they mean in plain words."""
import re
import tomllib
from dataclasses import dataclass
from functools import cache

from .. import paths

# Lines worth showing from a long make log: compiler errors, modpost errors, make's own failures.
RELEVANT = re.compile(r"(error:|ERROR:|warning: .*(?:float|SSE|GPL)|undefined!|\*\*\*)")
MAX_LINES = 8


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    advice: str
    line: str


@cache
def causes() -> list[dict]:
    return tomllib.loads((paths.rules() / "diagnostics.toml").read_text())["cause"]


def relevant_lines(log: str) -> list[str]:
    lines = [ln.rstrip() for ln in log.splitlines() if RELEVANT.search(ln)]
    return lines[:MAX_LINES]


def diagnose(log: str) -> list[Diagnosis]:
    found, seen = [], set()
    for line in log.splitlines():
        for c in causes():
            m = re.search(c["pattern"], line)
            if m:
                advice = c["advice"].replace("\n", " ")
                for i, g in enumerate(m.groups(), 1):
                    advice = advice.replace(f"{{{i}}}", g or "")
                key = (c["id"], advice)
                if key not in seen:
                    seen.add(key)
                    found.append(Diagnosis(c["id"], advice, line.strip()))
    return found
