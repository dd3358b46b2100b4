"""The package layering of ``src/ragkeep`` is the one ``docs/architecture.md`` writes down.

The rules are read from the document itself (its table between ``<!-- rules:begin -->`` and
``<!-- rules:end -->``), so the document is the rule. Every ``import`` counts, wherever it is in a
file: at the top, inside a function (a lazy import is still an arrow), and under
``if TYPE_CHECKING:`` (a type names the other package's concept: that is a dependency, even if
it costs nothing at run time). Checked: every package is in the table; every arrow between
packages is allowed; the packages form no cycle; the modules of one package form no cycle; the
diagram in the document shows the arrows as they are.

``python -m tests.test_architecture`` prints the arrows found and the diagram; with ``--write`` it
puts the diagram into the document.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ragkeep"
DOC = ROOT / "docs" / "architecture.md"
#: The root package (``ragkeep/__init__.py``): its version is imported everywhere, and any import
#: of a ``ragkeep`` module loads it anyway, so arrows into it are not layering.
TOP = "ragkeep"


# -- the rules, as the document writes them -------------------------------------------------------


@dataclass
class Rules:
    #: package -> packages it may import -> the only modules that may (None: any of its modules).
    allowed: dict[str, dict[str, frozenset[str] | None]]
    #: Packages every package (but those allowed nothing) may import.
    leaves: frozenset[str]
    #: Packages that may import nothing of ragkeep (not even the leaves).
    isolated: frozenset[str] = field(default_factory=frozenset)

    def may(self, package: str, target: str, module: str) -> bool:
        if package == target or target == TOP:
            return True
        if package in self.isolated:
            return False
        if target in self.leaves:
            return True
        if target not in self.allowed.get(package, {}):
            return False
        only = self.allowed[package][target]
        return only is None or module in only


_ROW = re.compile(r"^\|\s*`(?P<package>[a-z_]+)`\s*\|(?P<owns>[^|]*)\|(?P<imports>[^|]*)\|\s*$")
_ITEM = re.compile(r"^`(?P<target>[a-z_]+)`(?:\s*\(only\s+(?P<only>[^)]*)\))?$")
_LEAVES = re.compile(r"^Leaves:\s*(?P<names>.*)$")


def _section(text: str, name: str) -> list[str]:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise AssertionError(f"docs/architecture.md lost its {begin} ... {end} markers")
    return text.split(begin, 1)[1].split(end, 1)[0].strip().splitlines()


def parse_rules(text: str) -> Rules:
    """The table: ``| `package` | what it owns | may import |``, the last cell ``leaves``, `` `x` ``,
    `` `x` (only `package.module`) `` separated by commas, or ``nothing``; and a ``Leaves:`` line."""
    allowed: dict[str, dict[str, frozenset[str] | None]] = {}
    isolated: set[str] = set()
    leaves: frozenset[str] | None = None
    for line in _section(text, "rules"):
        line = line.strip()
        if m := _LEAVES.match(line):
            leaves = frozenset(re.findall(r"`([a-z_]+)`", m["names"]))
            continue
        m = _ROW.match(line)
        if m is None:
            continue
        package, cell = m["package"], m["imports"].strip()
        targets: dict[str, frozenset[str] | None] = {}
        if cell == "nothing":
            isolated.add(package)
        for item in (i.strip() for i in re.findall(r"[^,(]+(?:\([^)]*\))?", cell)):
            if item in ("", "nothing", "leaves"):
                continue
            found = _ITEM.match(item)
            if found is None:
                raise AssertionError(f"docs/architecture.md: cannot read {item!r} in the row of `{package}`")
            only = found["only"]
            targets[found["target"]] = frozenset(re.findall(r"`([a-z_.]+)`", only)) if only else None
        allowed[package] = targets
    if leaves is None:
        raise AssertionError("docs/architecture.md: the rules name no 'Leaves:'")
    return Rules(allowed, leaves, frozenset(isolated))


# -- the imports, as the code has them ------------------------------------------------------------


def modules(src: Path) -> dict[str, Path]:
    """``ragkeep.x.y`` -> its file, for every module under ``src`` (the ``ragkeep`` folder)."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = (src.name, *path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def package_of(module: str) -> str:
    """``ragkeep.search.planner`` -> ``search``; ``ragkeep.config`` -> ``config``; ``ragkeep`` -> TOP."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else TOP


def imports(module: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The ragkeep modules ``module`` imports, anywhere in its file: ``from a import b`` is an arrow
    to the module ``a.b`` when there is one, else to ``a``."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        for name in names:
            while name and name not in known:  # ``import a.b.c`` of a module: the longest known prefix
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def module_graph(src: Path) -> dict[str, set[str]]:
    known = modules(src)
    return {m: imports(m, p, known) for m, p in known.items()}


def package_arrows(graph: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(package, package) -> the (module, module) imports that make that arrow."""
    arrows: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            a, b = package_of(source), package_of(target)
            if a != b and b != TOP:
                arrows[(a, b)].add((source, target))
    return arrows


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# -- the checks, as functions of a tree and a document (so they can be tried on a broken tree) -----


def violations(src: Path, text: str) -> list[str]:
    """Everything in ``src`` that the rules in ``text`` do not allow, one line each."""
    rules = parse_rules(text)
    graph = module_graph(src)
    packages = {package_of(m) for m in graph} - {TOP}
    problems = [
        f"package `{package}` is not in the table of docs/architecture.md"
        for package in sorted(packages - set(rules.allowed))
    ]
    for (a, b), via in sorted(package_arrows(graph).items()):
        bad = sorted((s, t) for s, t in via if not rules.may(a, b, s))
        problems += [f"{a} -> {b} is not allowed: {s} imports {t}" for s, t in bad]
    package_graph: dict[str, set[str]] = defaultdict(set)
    for a, b in package_arrows(graph):
        package_graph[a].add(b)
    problems += [f"package cycle: {' <-> '.join(c)}" for c in cycles(package_graph)]
    for package in sorted(packages | {TOP}):
        inner = {m: {t for t in ts if package_of(t) == package} for m, ts in graph.items() if package_of(m) == package}
        problems += [f"module cycle in `{package}`: {' <-> '.join(c)}" for c in cycles(inner)]
    return problems


def diagram(src: Path, text: str) -> str:
    """The mermaid graph of the arrows between packages as they are (arrows into leaves left out:
    every package may have them)."""
    rules = parse_rules(text)
    graph = module_graph(src)
    arrows = package_arrows(graph)
    packages = sorted({package_of(m) for m in graph} - {TOP})
    lines = ["```mermaid", "graph TD"]
    for a, b in sorted(arrows):
        if b in rules.leaves:
            continue
        only = rules.allowed.get(a, {}).get(b)
        lines.append(f"    {a} -.->|only {', '.join(sorted(only))}| {b}" if only else f"    {a} --> {b}")
    present = [p for p in packages if p in rules.leaves]
    lines += ["    subgraph leaves [leaves: every package but client may import them]",
              *(f"        {p}" for p in present), "    end", "```"]
    return "\n".join(lines)


def test_every_import_follows_the_documented_arrows() -> None:
    problems = violations(SRC, DOC.read_text(encoding="utf-8"))
    assert not problems, "\n".join(["docs/architecture.md does not allow:", *problems])


def test_the_diagram_shows_the_arrows_as_they_are() -> None:
    text = DOC.read_text(encoding="utf-8")
    drawn = "\n".join(_section(text, "diagram"))
    assert drawn == diagram(SRC, text), (
        "the diagram in docs/architecture.md is out of date: python -m tests.test_architecture --write"
    )


def test_the_rules_name_the_packages_the_issue_fixes() -> None:
    """Packages still to come (``limits``, ``generation``) have their row before their code."""
    rules = parse_rules(DOC.read_text(encoding="utf-8"))
    assert {"api", "search", "indices", "ingest", "auth", "limits", "generation", "cli", "client"} <= set(rules.allowed)
    assert {"config", "text", "errors"} <= rules.leaves
    assert not rules.may("search", "api", "ragkeep.search.service")
    assert not rules.may("db", "search", "ragkeep.db.pool")
    assert not rules.may("embeddings", "db", "ragkeep.embeddings.base")
    assert not rules.may("client", "config", "ragkeep.client.client")
    assert not rules.may("cli", "ingest", "ragkeep.cli.main")


# -- the checker itself can fail ------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "ragkeep"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n\n{line}\n", encoding="utf-8")


def test_a_forbidden_arrow_fails(tree: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert violations(tree, text) == []
    _append(tree / "search" / "scope.py", "def _f() -> None:\n    from ragkeep.api.deps import ServicesDep  # lazy")
    assert violations(tree, text) == [
        "search -> api is not allowed: ragkeep.search.scope imports ragkeep.api.deps",
        "package cycle: api <-> search",
    ]


def test_a_type_checking_import_is_an_arrow(tree: Path) -> None:
    _append(
        tree / "db" / "pool.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ragkeep.search.planner import Planner",
    )
    assert violations(tree, DOC.read_text(encoding="utf-8")) == [
        "db -> search is not allowed: ragkeep.db.pool imports ragkeep.search.planner",
        "package cycle: db <-> search",
    ]


def test_a_module_cycle_inside_a_package_fails(tree: Path) -> None:
    """cli/main.py <-> cli/index.py, as it was (index imported main's helpers at the bottom of main)."""
    _append(tree / "cli" / "index.py", "from ragkeep.cli.main import out as _out")
    assert violations(tree, DOC.read_text(encoding="utf-8")) == [
        "module cycle in `cli`: ragkeep.cli.index <-> ragkeep.cli.main",
    ]


def test_an_arrow_allowed_to_one_module_only_fails_from_another(tree: Path) -> None:
    _append(tree / "cli" / "index.py", "def _f() -> None:\n    from ragkeep.api.app import create_app")
    assert violations(tree, DOC.read_text(encoding="utf-8")) == [
        "cli -> api is not allowed: ragkeep.cli.index imports ragkeep.api.app",
    ]


def test_an_unknown_package_fails(tree: Path) -> None:
    (tree / "reports").mkdir()
    (tree / "reports" / "__init__.py").write_text("from ragkeep.db import pool\n", encoding="utf-8")
    assert violations(tree, DOC.read_text(encoding="utf-8")) == [
        "package `reports` is not in the table of docs/architecture.md",
        "reports -> db is not allowed: ragkeep.reports imports ragkeep.db.pool",
    ]


def write_diagram() -> None:
    """Replace the document's diagram with the arrows as they are."""
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- diagram:begin -->", "<!-- diagram:end -->"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    DOC.write_text(f"{head}{begin}\n{diagram(SRC, text)}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":  # what is: the arrows, the violations, the diagram (--write: into the document)
    doc = DOC.read_text(encoding="utf-8")
    for (a, b), via in sorted(package_arrows(module_graph(SRC)).items()):
        print(f"{a} -> {b}: {', '.join(sorted({s for s, _ in via}))}")
    print("\n".join(violations(SRC, doc)) or "no violations")
    if "--write" in sys.argv:
        write_diagram()
        print(f"wrote the diagram into {DOC.relative_to(ROOT)}")
    else:
        print(diagram(SRC, doc))
