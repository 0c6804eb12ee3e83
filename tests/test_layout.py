"""The package's shape: no import circle, and no module outside the emulator over ~500 lines
unless its docstring says it is one concept.

Imports are read with :mod:`ast`, not run. Every import that can run counts, those inside
functions too: a circle that only lazy imports keep from failing is still two modules that
cannot be understood apart. Imports under ``if TYPE_CHECKING:`` do not: they never run, and
naming a type for an annotation is how a module refers back without depending on it. Edges go
to the module named (``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else
to ``a.b``); a module's implicit import of its parent packages is not an edge.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path


import kling_video_mcp

PACKAGE = Path(kling_video_mcp.__file__).parent
MAX_LINES = 500
ONE_CONCEPT = "One concept:"
"""The phrase a long module's docstring uses to say why it stays whole."""


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package`` (``__init__`` is the package)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runnable(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks (their ``else`` runs, so it counts)."""
    nodes, pending = [], [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return nodes


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (at ``path``) imports in code that can run."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in _runnable(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    targets.add(f"{source}.{alias.name}")
                elif source in known:
                    targets.add(source)
    return targets - {name}


def import_circles(package: Path) -> list[list[str]]:
    """Every import circle in ``package``: its strongly connected groups of two or more modules
    (Tarjan's algorithm), each sorted."""
    known = modules(package)
    graph = {name: sorted(imported(name, path, known)) for name, path in known.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(name: str) -> None:
        order[name] = low[name] = len(order)
        stack.append(name)
        for target in graph[name]:
            if target not in order:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], order[target])
        if low[name] == order[name]:
            group = stack[stack.index(name):]
            del stack[stack.index(name):]
            if len(group) > 1:
                circles.append(sorted(group))

    for name in graph:
        if name not in order:
            visit(name)
    return circles


def test_the_package_has_no_import_circle():
    assert import_circles(PACKAGE) == []


def test_the_circle_finder_sees_a_circle_through_a_lazy_import_and_not_through_annotations(tmp_path: Path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("import pkg.b\n")
    (package / "b.py").write_text("def f():\n    from .sub import a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import x\n")
    (package / "d.py").write_text("from pkg import c\n")
    assert import_circles(package) == [["pkg.b", "pkg.sub.a"]]


def long_modules_without_one_concept() -> list[str]:
    """Modules outside ``emulator/`` over :data:`MAX_LINES` lines whose docstring lacks :data:`ONE_CONCEPT`."""
    offenders = []
    for name, path in modules(PACKAGE).items():
        text = path.read_text(encoding="utf-8")
        if ".emulator" in name or len(text.splitlines()) <= MAX_LINES:
            continue
        if ONE_CONCEPT not in (ast.get_docstring(ast.parse(text)) or ""):
            offenders.append(path.relative_to(PACKAGE).as_posix())
    return offenders


def test_a_module_over_500_lines_says_it_is_one_concept():
    """Split a long module, or say in its docstring ``One concept: ...`` why it stays whole."""
    assert long_modules_without_one_concept() == []


# -- citations a repository reader can open ---------------------------------------------------

SERVER = PACKAGE.parent
PROVIDERS_DOC = SERVER.parent / "docs" / "providers.md"
UNREADABLE_CITATIONS = ("providers.md §", "hosts.md", "shared/specs", "shared/reference", "mcp-sdk.md")
"""References to material beside the repository (the team's reference notes), which no reader of
the repository can open: cite ``docs/providers.md#<anchor>`` or the public page instead."""
ANCHOR_CITATION = re.compile(r"docs/providers\.md#([\w-]+)")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``: lower case, punctuation other than
    ``-`` and ``_`` dropped, spaces made hyphens, and ``-1``, ``-2``... after repeats. Headings
    inside fenced code blocks are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        repeats = seen.get(slug, 0)
        seen[slug] = repeats + 1
        anchors.add(slug if repeats == 0 else f"{slug}-{repeats}")
    return anchors


def server_texts() -> dict[Path, str]:
    """Every text file under ``server/`` (sources, templates, data), by path."""
    texts = {}
    for path in sorted(SERVER.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # a binary file cites nothing
    return texts


def test_github_anchors_follow_githubs_slug_rules():
    doc = "# A page\n## fal.ai\n### Kling: held submits\n```\n## not a heading\n```\n## fal.ai\n"
    assert github_anchors(doc) == {"a-page", "falai", "kling-held-submits", "falai-1"}


def test_nothing_under_server_cites_what_a_repository_reader_cannot_open():
    found = [
        f"{path.relative_to(SERVER.parent)}:{number}: {citation!r}"
        for path, text in server_texts().items()
        for number, line in enumerate(text.splitlines(), start=1)
        for citation in UNREADABLE_CITATIONS
        if citation in line.replace("docs/providers.md", "")
    ]
    assert found == [], "cite docs/providers.md#<anchor> or a public URL instead:\n" + "\n".join(found)


def test_every_docs_providers_anchor_cited_under_server_is_a_heading():
    anchors = github_anchors(PROVIDERS_DOC.read_text(encoding="utf-8"))
    cited = {
        (path, anchor) for path, text in server_texts().items() for anchor in ANCHOR_CITATION.findall(text)
    }
    assert cited, "the server cites docs/providers.md anchors; finding none means the pattern broke"
    missing = sorted(f"{path.relative_to(SERVER.parent)}: #{anchor}" for path, anchor in cited if anchor not in anchors)
    assert missing == [], "no such heading in docs/providers.md:\n" + "\n".join(missing)
