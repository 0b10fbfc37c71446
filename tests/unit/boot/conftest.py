from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def console():
    def load(name: str) -> list[str]:
        return (FIXTURES / name).read_text().splitlines()
    return load
