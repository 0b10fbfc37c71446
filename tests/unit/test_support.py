"""The support matrix comes from the data: every pin x flavour x arch cell, and the README's table is
that matrix (regenerate it with `invoke toolchains --readme`)."""
from kmod import arch as archmod
from kmod import flavour as flavourmod
from kmod import pins, support
from tests.conftest import ROOT, run_cli


def test_readme_table_is_generated_from_the_data():
    readme = (ROOT / "README.md").read_text()
    table = support.readme_table(list(pins.all_pins().values()))
    assert table in readme, "README.md's support table is stale: run `invoke toolchains --readme`"
    assert support.with_readme_table(readme, table) == readme


def test_every_cell_a_pin_asks_for_is_listed_with_its_state():
    cells = support.cells(list(pins.all_pins().values()))
    keys = {(c.pin.name, c.flavour.name, c.arch.name) for c in cells}
    assert len(keys) == len(cells)
    for p in pins.all_pins().values():
        for a in (archmod.get(n) for n in p.arches):
            for f in (flavourmod.get(n) for n in p.flavours):
                assert ((p.name, f.name, a.name) in keys) == f.applies_to(a)
    for c in cells:
        assert c.state in (support.LOCKED, support.NOT_SHIPPED, support.NOT_LOCKED)
        if c.state == support.LOCKED:
            assert c.release == f"{c.abi}-{c.flavour.kernel_flavour(c.arch)}"
    rt = [c for c in cells if c.flavour.name == "rt"]
    assert rt and all(c.arch.name in c.flavour.arches for c in rt)


def test_toolchains_filters_by_arch_and_flavour():
    import json
    proc = run_cli("toolchains", "--json", "--arch", "ppc64le", "--flavour", "all")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and {r["arch"] for r in rows} == {"ppc64el"} and {r["flavour"] for r in rows} == {"generic"}
    proc = run_cli("toolchains", "--flavour", "nosuch")
    assert proc.returncode == 1 and "unsupported flavour: 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr
