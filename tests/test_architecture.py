"""The library's rooms: no import circle, no import hidden in a function to dodge one, no module too long to read,
and every closed choice of the workflow config written once (distillery.choices)."""
import ast
import re
from pathlib import Path

import yaml

from distillery import choices
from distillery.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SRC / "distillery").rglob("*.py"))}


def imported(name: str, node: ast.ImportFrom | ast.Import, importer: str) -> list[str]:
    """The distillery modules an import statement in `importer` runs: each named module (a `from X import name`
    that names a submodule runs it too) and the packages above it that are not already above `importer`."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from .space import x
            package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
    found = []
    for target in targets:
        if not target.startswith("distillery.") or target not in MODULES:
            continue
        parts = target.split(".")
        for depth in range(2, len(parts) + 1):
            package = ".".join(parts[:depth])
            if not (importer == package or importer.startswith(package + ".")) and package not in found:
                found.append(package)
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """({module: the distillery modules it imports}, ['module:line name' of each import inside a function])."""
    graph, in_functions = {}, []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        graph[name] = set()
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(node) for function in functions for node in ast.walk(function) if node is not function}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = imported(name, node, name)
                graph[name] |= set(targets)
                if targets and id(node) in inside:
                    in_functions.append(f"{name}:{node.lineno} {', '.join(targets)}")
    return graph, in_functions


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), and modules that import themselves."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_sees_known_edges():
    """The graph the next tests judge: it has the planner's imports (package and submodule), so an empty answer
    below is not an empty graph."""
    graph, _ = import_graph()
    assert {"distillery.plan.paths", "distillery.budget", "distillery.budget.memory"} <= graph["distillery.plan.settings"]
    assert "distillery.plan" not in graph["distillery.plan.settings"]  # its own package is already being imported
    assert {"distillery.models", "distillery.models.convnet"} <= graph["distillery.plan.cost"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    graph, _ = import_graph()
    found = circles(graph)
    assert found == [], "import circles:\n" + "\n".join(
        " <-> ".join(group) + "\n  " + "; ".join(f"{a} -> {', '.join(sorted(graph[a] & set(group)))}" for a in group)
        for group in found)


def test_no_function_level_import_of_a_distillery_module():
    """A distillery import inside a function hides an edge of the graph (often one that closes a circle): every
    import of the library stands at the top of its module."""
    _, in_functions = import_graph()
    assert in_functions == [], "imports inside functions (module:line modules):\n" + "\n".join(in_functions)


def test_no_module_over_400_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
    assert max(lengths.values()) > 100  # the files were read


def schema_enums(node, where="") -> dict[str, list]:
    """{path in the schema: its enum list} of every `enum:` in the config schema."""
    found = {}
    if isinstance(node, dict):
        if "enum" in node:
            found[where] = node["enum"]
        for key, value in node.items():
            found.update(schema_enums(value, f"{where}.{key}" if where else str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.update(schema_enums(value, f"{where}[{i}]"))
    return found


def test_every_schema_enum_is_a_table_of_the_library():
    """Each closed choice of workflow/schemas/config.schema.yaml equals its one table in the library, so the schema
    and the code cannot disagree about what is allowed."""
    enums = schema_enums(yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text()))
    tables = {"definitions.dataset": tuple(DATASETS), "properties.runtime.properties.tf32": choices.TF32_MODES,
              "properties.dvc_experts.additionalProperties.properties.norm": choices.NORMS,
              "properties.methods.additionalProperties.properties.kind": choices.KINDS,
              "properties.methods.additionalProperties.properties.init": choices.INITS,
              "properties.methods.additionalProperties.properties.representative": choices.REPRESENTATIVES,
              "properties.methods.additionalProperties.properties.select": choices.SELECTS,
              "properties.methods.additionalProperties.properties.memory": choices.MEMORY_SETTINGS,
              "properties.tables.items.properties.figures.items": choices.FIGURES,
              "properties.tables.items.properties.measure": choices.MEASURES,
              "definitions.selection.properties.rules.items": choices.SELECTION_RULES,
              "properties.stability.items.properties.parameters.items": choices.STABILITY_PARAMETERS,
              "properties.nas.items.properties.space": choices.NAS_SPACES,
              "properties.evaluation.properties.soft_loss": choices.SOFT_LOSSES,
              "properties.protocols.additionalProperties.properties.soft_loss": choices.SOFT_LOSSES,
              "properties.evaluation.properties.schedule": choices.EVAL_SCHEDULES,
              "properties.protocols.additionalProperties.properties.schedule": choices.EVAL_SCHEDULES}
    assert set(enums) == set(tables), "an enum of the schema without its table here (or a table moved)"
    for where, values in enums.items():
        if where == "definitions.dataset":  # the registry's order is its own; the schema lists them by source
            assert sorted(values) == sorted(tables[where]) and len(values) == len(set(values))
        else:
            assert tuple(values) == tables[where], where


def test_closed_wildcards_of_the_workflow_come_from_the_tables():
    """common.smk constrains {norm}, {parameter} and {figure} by joining the tables, not by spelling them again."""
    text = (ROOT / "workflow/rules/common.smk").read_text()
    for wildcard, table in (("norm", "NORMS"), ("parameter", "STABILITY_PARAMETERS"), ("figure", "FIGURES")):
        assert re.search(rf'^\s+{wildcard}="\|"\.join\({table}\),$', text, re.M), wildcard
