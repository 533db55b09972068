"""The tree shows the pipeline: one package per stage, each importing only the
stages below it (the import-linter contract in pyproject.toml), and no import
circle anywhere, function-level imports included."""

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "latticegenome"
STAGES = ("core", "ingest", "columns", "statistics", "dynamics", "figures", "dft", "provenance")


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Modules of the library and what each imports from it (at any depth of the code)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "latticegenome":
                    graph.add_edge(name, t)
    return graph


def test_every_stage_is_a_package():
    for stage in STAGES:
        init = SRC / stage / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), stage
    flat = sorted(p.name for p in SRC.glob("*.py"))
    assert flat == ["__init__.py", "api.py", "cli.py", "profiles.py", "resume.py", "watch.py"], flat


def test_stages_import_only_the_stages_below_them():
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_import_circles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, cycles[:5]
