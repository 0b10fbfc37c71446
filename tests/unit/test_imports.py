"""Every import in kmod resolves, the lazy ones inside functions too (they run only when a task needs
them, so a moved module would otherwise break a user's command long after the tests passed)."""
import ast
import importlib
from pathlib import Path

from tests.conftest import ROOT


def _imports():
    for path in sorted((ROOT / "kmod").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = parts if path.name == "__init__.py" else parts[:-1]
        package = package[:-1] if package[-1] == "__init__" else package
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(package[:len(package) - (node.level - 1)])
                yield path, node.lineno, ".".join(base + ([node.module] if node.module else [])), node.names
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kmod"):
                yield path, node.lineno, node.module, node.names
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("kmod"):
                        yield path, node.lineno, a.name, []


def test_every_kmod_import_resolves():
    broken = []
    for path, line, module, names in _imports():
        where = f"{Path(path).relative_to(ROOT)}:{line}"
        try:
            m = importlib.import_module(module)
        except ImportError as e:
            broken.append(f"{where}: {module} ({e})")
            continue
        for a in names:
            if a.name != "*" and not hasattr(m, a.name):
                try:
                    importlib.import_module(f"{module}.{a.name}")
                except ImportError:
                    broken.append(f"{where}: {module} has no {a.name}")
    assert not broken, "\n".join(broken)
