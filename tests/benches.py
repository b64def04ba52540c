"""The scripts of `bench/` as modules, for the tests that check them small."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load(script: str, name: str | None = None) -> ModuleType:
    """`bench/<script>.py`, imported as `name` (default: the script's own name)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{script}.py"
    name = name or script
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
