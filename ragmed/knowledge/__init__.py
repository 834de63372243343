"""Medical knowledge graphs: build (UMLS RRF, open registry sources, OBO files), persist, link text, give evidence.

Public API (the pipeline uses these names):

- ``load_graph(path) -> KnowledgeGraph`` (``kg.id``, ``kg.link(text) -> list[LinkedConcept]``, ``kg.lookup``,
  ``kg.concept``, ``kg.neighbours``, ``kg.graph`` as networkx)
- ``knowledge_evidence(kg, question, reports, max_concepts) -> list[KnowledgeEvidence]``
- ``default_graph_path()``: the bundled open default graph (``knowledge/open-default``)
- ``build_graph(specs) -> networkx.MultiDiGraph`` and ``save_graph(G, out)``

Schema of nodes and edges: ``ragmed/knowledge/schema.py``; on-disk format: ``store.py``; README:
``knowledge/README.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ragmed.cache import BoundedCache
from ragmed.errors import KnowledgeError

if TYPE_CHECKING:  # pragma: no cover
    from ragmed.knowledge.graph import KnowledgeGraph, LinkedConcept

__all__ = ["load_graph", "default_graph_path", "knowledge_evidence", "build_graph", "save_graph", "KnowledgeGraph",
           "LinkedConcept"]

DEFAULT_NAME = "open-default"
# Loaded graphs, per (resolved path, manifest mtime); bounded so that rebuilt or many graphs do not pile up.
_CACHE: "BoundedCache[tuple[str, float], KnowledgeGraph]" = BoundedCache(4)


def default_graph_path() -> Path:
    """``$RAGMED_KG`` if set, else ``knowledge/open-default`` in the repository (or the working directory)."""
    from ragmed.settings import settings

    env = settings().knowledge_graph
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "knowledge" / DEFAULT_NAME
    if repo.exists():
        return repo
    cwd = Path.cwd() / "knowledge" / DEFAULT_NAME
    return cwd if cwd.exists() else repo


def load_graph(path: str | Path | None = None, *, cache: bool = True) -> "KnowledgeGraph":
    """Load a knowledge directory (default: :func:`default_graph_path`). Loaded graphs are cached per process by
    path and manifest modification time."""
    from ragmed.knowledge.graph import KnowledgeGraph
    from ragmed.knowledge.store import read_columns, read_manifest

    p = Path(path) if path is not None else default_graph_path()
    if not p.exists():
        remedy = ("build it with: ragmed kg build --source open --out " + str(p)) if p.name == DEFAULT_NAME else \
            "build one with: ragmed kg build --source open|obo:FILE|umls:DIR --out DIR"
        raise KnowledgeError("knowledge graph directory not found", path=str(p), remedy=remedy)
    manifest = read_manifest(p)
    key = (str(p.resolve()), (p / "manifest.json").stat().st_mtime)
    def build() -> "KnowledgeGraph":
        cols, edges, lex = read_columns(p)
        return KnowledgeGraph(p, manifest, cols, edges, lex)

    return _CACHE.get_or_create(key, build) if cache else build()


def knowledge_evidence(kg: "KnowledgeGraph", question: str, reports: list[str], max_concepts: int = 5):
    from ragmed.knowledge.evidence import knowledge_evidence as _ke

    return _ke(kg, question, reports, max_concepts=max_concepts)


def build_graph(specs, **umls_options):
    from ragmed.knowledge.build import build_graph as _bg

    return _bg(specs, **umls_options)


def save_graph(G, out, **kw):
    from ragmed.knowledge.store import save_graph as _sg

    return _sg(G, out, **kw)


_LAZY = {  # names the `ragmed kg` command uses, resolved on first use (no graph code loads with the package)
    "KnowledgeGraph": "graph", "LinkedConcept": "graph", "DEFAULT_LINK_TYPES": "schema", "read_manifest": "store",
    "DEFAULT_RELATIONS": "umls", "SUPPRESSED": "umls", "FuzzyLinker": "embed", "FUZZY_FILE": "embed",
}


def __getattr__(name: str):
    sub = _LAZY.get(name)
    if sub is not None:
        import importlib

        mod = importlib.import_module(f"ragmed.knowledge.{sub}")
        return getattr(mod, "FILE" if name == "FUZZY_FILE" else name)
    raise AttributeError(f"module 'ragmed.knowledge' has no attribute {name!r}")
