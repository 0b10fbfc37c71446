"""Errors a user sees: one line that says what is wrong and what to do.

Three families, each with its exit code (as TuxMake does):
  UserError  (1) bad input: unknown arch, bad symbol, missing spec.
  InfraError (1) the environment failed us: no Docker engine, mirror unreachable.
  BuildFailed(2) the thing the user asked for was tried and failed.
"""


class KmodError(Exception):
    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f" ({self.hint})" if self.hint else "")

    def line(self) -> str:
        """The single line shown to the user."""
        return f"{self.kind}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class UserError(KmodError):
    kind = "error"


class InfraError(KmodError):
    kind = "environment error"


class BuildFailed(KmodError):
    exit_code = 2
    kind = "build failed"


def unsupported(what: str, name: str, known: list[str]) -> UserError:
    return UserError(f"unsupported {what}: {name!r}", f"choose one of: {', '.join(known)}")
