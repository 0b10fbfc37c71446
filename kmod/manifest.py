"""One manifest of what was built (dist/manifest.json): inputs, hashes, toolchain, results per cell.
The stages hand over through it (build -> lint -> package -> boot-test). Written atomically, early and
at the end, so a killed run still leaves a record."""
import json
import threading
import time
from pathlib import Path

from . import atomic

FORMAT = 1


class Manifest:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.data = self._read()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == FORMAT and isinstance(data.get("cells"), dict):
                return data
        except (OSError, ValueError):
            pass  # missing or damaged: start afresh, every cell simply rebuilds
        return {"format": FORMAT, "cells": {}, "runs": []}

    @property
    def cells(self) -> dict:
        return self.data["cells"]

    def cell(self, key: str) -> dict | None:
        return self.cells.get(key)

    def update_cell(self, cell_id: str, /, **fields) -> None:
        with self._lock:
            self.cells.setdefault(cell_id, {}).update(fields)

    def set_cell(self, cell_id: str, record: dict) -> None:
        """Replace a cell's record: results of later stages (lint, boot) for older bytes go with it."""
        with self._lock:
            self.cells[cell_id] = dict(record)

    @property
    def packages(self) -> dict:
        """module -> what its last `package` run made (version, result, a file per format)."""
        return self.data.setdefault("packages", {})

    def set_package(self, module: str, record: dict) -> None:
        with self._lock:
            self.packages[module] = dict(record)

    def start_run(self, command: str) -> None:
        with self._lock:
            self.data["runs"] = (self.data.get("runs", []) + [{"command": command, "started": time.time(),
                                                               "status": "running"}])[-20:]
        self.save()

    def finish_run(self, status: str, **fields) -> None:
        with self._lock:
            self.data["runs"][-1].update(status=status, finished=time.time(), **fields)
        self.save()

    def save(self) -> None:
        with self._lock:
            atomic.write_json(self.path, self.data)
