"""The code keeps its shape: no import cycle and no import from a lower layer into a higher one.

The layers are listed in scripts/code_shape.py and described in docs/concepts.md; every
import counts, also one inside a function.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _shape() -> ModuleType:
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_shape"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle() -> None:
    shape = _shape()
    graph = shape.imports(shape.modules())
    assert shape.cycles(graph) == []


def test_no_upward_import() -> None:
    shape = _shape()
    graph = shape.imports(shape.modules())
    assert shape.upward(graph) == []


def test_the_checker_finds_a_cycle_and_an_upward_import() -> None:
    """The checks above could pass by finding nothing: feed them a graph with both faults."""
    shape = _shape()
    graph = {"agents.results": {"agents.cli"}, "agents.cli": {"agents.results"}}
    assert shape.cycles(graph) == [["agents.cli", "agents.results"]]
    assert shape.upward(graph) == ["agents.results (layer 0) imports agents.cli (layer 5)"]
