"""What a lint run produces: findings per module, and the report over all modules."""
from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "warning", "error")
RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    function: str | None = None
    section: str | None = None
    address: int | None = None   # offset inside `section` (modules are relocatable: no absolute addresses)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        return cls(**{k: d.get(k) for k in ("rule", "severity", "message", "function", "section", "address")})


@dataclass
class ModuleResult:
    path: str
    arch: str | None
    findings: list[Finding] = field(default_factory=list)
    facts: dict | None = None      # exports, needs, imported namespaces (deps.facts), for the set's resolution
    provided: dict[str, str] = field(default_factory=dict)   # symbol -> the module of the set providing it
    depends: list[str] = field(default_factory=list)         # modules of the set to load first

    def worst(self) -> str | None:
        return max((f.severity for f in self.findings), key=RANK.__getitem__, default=None)

    def signature(self, against_cert: bool) -> str:
        """What the signature rule found, as kmod.lint.signature.state() says it: absent, present,
        malformed, and against a certificate verifies or does not verify ("" when the file was no module)."""
        rules = {f.rule for f in self.findings}
        if self.arch is None:
            return ""
        if "module-signature" in rules:
            return "malformed"
        if "signature-present" not in rules:
            return "absent"
        if not against_cert:
            return "present"
        return "does not verify" if "signature-invalid" in rules else "verifies"


@dataclass
class Report:
    modules: list[ModuleResult] = field(default_factory=list)
    target: str | None = None
    cached: int = 0          # how many modules came from the cache (for progress lines and the benchmark)
    order: list[str] = field(default_factory=list)   # load order: providers first (deps.provider_order)
    cert: str | None = None  # the certificate the signatures were checked against (--cert)

    def worst(self) -> str | None:
        return max((m.worst() for m in self.modules if m.worst()), key=RANK.__getitem__, default=None)

    def exit_code(self, fail_on: str = "error") -> int:
        """0 when no finding reaches `fail_on`, 2 when one does (the issue's contract)."""
        if fail_on not in RANK:
            from ..errors import UserError
            raise UserError(f"unknown --fail-on level {fail_on!r}", "choose error, warning or info")
        worst = self.worst()
        return 2 if worst is not None and RANK[worst] >= RANK[fail_on] else 0

    def findings(self):
        for m in self.modules:
            for f in m.findings:
                yield m, f

    def count(self, severity: str) -> int:
        return sum(1 for _, f in self.findings() if f.severity == severity)
