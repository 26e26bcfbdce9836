"""The layout of `trainers/` is its architecture: which room may import which, read from the source (no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINERS = Path(__file__).resolve().parents[1] / "trainers"
BENCHES = ("ids", "rec", "retrieval")


def imported_modules(path: Path) -> set[str]:
    """Every `lmindexer.trainers...` module `path` imports, at module level or inside functions, as a dotted name
    relative to `trainers` (`indexer.kmeans`, `downstream`)."""
    package = path.relative_to(TRAINERS).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)]) if node.level > 1 else list(package)
                if node.level - 1 > len(package):
                    continue  # above trainers/: modeling_lmindexer, hub_cards
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [target] if node.module else [[*target, alias.name] for alias in node.names]
            elif node.module and node.module.startswith("lmindexer.trainers."):
                names = [node.module.split(".")[2:]]
            else:
                continue
            found.update(".".join(name) for name in names if name)
        elif isinstance(node, ast.Import):
            found.update(
                ".".join(alias.name.split(".")[2:])
                for alias in node.names
                if alias.name.startswith("lmindexer.trainers.")
            )
    return found


def modules_of(room: str) -> list[Path]:
    return sorted((TRAINERS / room).rglob("*.py"))


@pytest.mark.parametrize("path", modules_of("indexer"), ids=lambda path: path.name)
def test_the_indexer_imports_no_downstream_bench_or_id_method(path):
    """Indexer training sits below the ID methods (which drive it) and knows nothing of fine-tuning or benches."""
    forbidden = [name for name in imported_modules(path) if name.split(".")[0] in ("downstream", "bench", "id_methods")]
    assert forbidden == [], f"{path.relative_to(TRAINERS)} imports {forbidden}"


@pytest.mark.parametrize(
    "path",
    [*modules_of("downstream"), *modules_of("data"), *modules_of("folders")],
    ids=lambda path: str(path.relative_to(TRAINERS)),
)
def test_downstream_data_and_folders_import_no_bench(path):
    forbidden = [name for name in imported_modules(path) if name.split(".")[0] == "bench"]
    assert forbidden == [], f"{path.relative_to(TRAINERS)} imports {forbidden}"


@pytest.mark.parametrize("bench", BENCHES)
def test_no_bench_imports_another_bench(bench):
    others = {f"bench.{other}" for other in BENCHES if other != bench}
    imported = imported_modules(TRAINERS / "bench" / f"{bench}.py")
    assert not imported & others, f"bench/{bench}.py imports {sorted(imported & others)}"


def test_trainers_top_level_holds_rooms_and_entry_points_only():
    """`ls trainers/` shows where indexing ends and fine-tuning begins: packages, the command line and its presets."""
    modules = sorted(path.name for path in TRAINERS.glob("*.py"))
    rooms = sorted(path.name for path in TRAINERS.iterdir() if (path / "__init__.py").is_file())
    assert modules == ["__init__.py", "cli.py", "presets.py"]
    assert rooms == ["bench", "data", "downstream", "folders", "id_methods", "indexer"]
