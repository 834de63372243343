"""Structural figures of the ``ragmed`` package, read from its source with ``ast`` (nothing is imported).

    python eval/code_metrics.py [--json eval/results/code_metrics_<label>.json] [--label before|after]

Prints and records:
- the largest classes and functions (lines, methods per class);
- where each ``RAGMED_*`` environment variable is read (modules whose code, not docstrings, names it);
- where each on-disk file format is parsed (modules whose code names the file: an index's ``manifest.json``,
  an encoder model directory's ``config.json`` / ``preprocess.json``, ``retrieval_calibration.json``,
  ``router.json``, ``meta.sqlite`` / raw SQL over it, ``*.faiss``);
- the import cycles between modules (strongly connected components of the module import graph, imports inside
  functions included, ``if TYPE_CHECKING:`` blocks excluded).

``tests/test_architecture.py`` loads this file for the import graph, so the figures and the rules it holds are read
the same way.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ragmed"

FORMATS = {  # format -> string constants whose presence in code means "this module opens that file itself"
    "index manifest (manifest.json; knowledge graphs' own manifest.json not counted)": ("manifest.json",),
    "ragmed-default model dir JSON (preprocess.json + its config.json)": ("preprocess.json",),
    "retrieval calibration (retrieval_calibration.json)": ("retrieval_calibration.json",),
    "router classifier (router.json / router.npz)": ("router.json", "router.npz"),
    "index metadata (meta.sqlite)": ("meta.sqlite",),
    "FAISS files (*.faiss)": (".faiss",),
}


@dataclass
class Module:
    name: str  # ragmed.pipeline.build
    path: Path
    tree: ast.Module
    is_package: bool
    imports: list[tuple[str, str | None, int]] = field(default_factory=list)  # (module, imported name, line)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    for n in ast.walk(sub):
                        skip.add(id(n))
    return skip


def load_modules(root: Path = PACKAGE) -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        name = module_name(path, root)
        mods[name] = Module(name, path, tree, path.name == "__init__.py")
    for m in mods.values():
        skip = _type_checking_nodes(m.tree)
        pkg = m.name if m.is_package else m.name.rpartition(".")[0]
        for node in ast.walk(m.tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    m.imports.append((a.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in mods:  # `from ragmed.encoders import clip`: the submodule itself
                        m.imports.append((sub, None, node.lineno))
                    else:
                        m.imports.append((base, a.name, node.lineno))
    return mods


def resolve(target: str, mods: dict[str, Module]) -> str | None:
    """The ragmed module an import names (the longest existing prefix), or None outside ragmed."""
    if not (target == "ragmed" or target.startswith("ragmed.")):
        return None
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def import_graph(mods: dict[str, Module]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {n: set() for n in mods}
    for m in mods.values():
        for target, _, _ in m.imports:
            r = resolve(target, mods)
            if r is not None and r != m.name:
                g[m.name].add(r)
    return g


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def sizes(mods: dict[str, Module], top: int = 8) -> dict:
    classes, funcs = [], []
    for m in mods.values():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ClassDef):
                n_methods = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                classes.append({"name": f"{m.name}.{node.name}", "lines": node.end_lineno - node.lineno + 1,
                                "methods": n_methods})
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append({"name": f"{m.name}:{node.name}", "lines": node.end_lineno - node.lineno + 1})
    classes.sort(key=lambda c: -c["lines"])
    funcs.sort(key=lambda f: -f["lines"])
    return {"largest_classes": classes[:top], "largest_functions": funcs[:top],
            "classes_over_200_lines": sum(c["lines"] > 200 for c in classes),
            "functions_over_80_lines": sum(f["lines"] > 80 for f in funcs)}


def _code_strings(m: Module):
    docs = _docstring_nodes(m.tree)
    for node in ast.walk(m.tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.value


def env_reads(mods: dict[str, Module]) -> dict[str, list[str]]:
    """RAGMED_* variable -> modules that read it (os.environ.get / os.getenv / os.environ[...] with that literal)."""
    out: dict[str, set[str]] = {}
    for m in mods.values():
        for node in ast.walk(m.tree):
            lit = None
            if isinstance(node, ast.Call):  # os.environ.get("RAGMED_X"), os.getenv(…), env.get(…) on a mapping
                fname = ast.unparse(node.func)
                if (fname.endswith(".get") or fname in ("os.getenv", "getenv")) and node.args \
                        and isinstance(node.args[0], ast.Constant):
                    lit = node.args[0].value
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                    and isinstance(node.ctx, ast.Load):
                lit = node.slice.value
            if isinstance(lit, str) and lit.startswith("RAGMED_"):
                out.setdefault(lit, set()).add(m.name)
    return {k: sorted(v) for k, v in sorted(out.items())}


def format_readers(mods: dict[str, Module]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for fmt, needles in FORMATS.items():
        users = set()
        for m in mods.values():
            if fmt.startswith("index manifest") and m.name.startswith("ragmed.knowledge"):
                continue
            if any(any(s == n or (n.startswith(".") and s.endswith(n) and len(s) > len(n)) or
                       (not n.startswith(".") and s.endswith("/" + n)) for n in needles) for s in _code_strings(m)):
                users.add(m.name)
        out[fmt] = sorted(users)
    return out


def raw_sql_users(mods: dict[str, Module]) -> list[str]:
    """Modules that run SQL over an index's meta.sqlite outside ragmed.index."""
    out = set()
    for m in mods.values():
        if m.name.startswith("ragmed.index") or m.name.startswith("ragmed.knowledge"):
            continue  # the knowledge graph has its own SQLite store
        for s in _code_strings(m):
            if s.lstrip().upper().startswith("SELECT ") and " FROM " in s.upper():
                out.add(m.name)
    return sorted(out)


def measure(root: Path = PACKAGE) -> dict:
    mods = load_modules(root)
    g = import_graph(mods)
    cyc = cycles(g)
    env = env_reads(mods)
    fmts = format_readers(mods)
    return {
        "command": "python eval/code_metrics.py",
        "modules": len(mods),
        "lines": sum(len(m.path.read_text(encoding="utf-8").splitlines()) for m in mods.values()),
        "pipeline_class_lines": next((c["lines"] for c in sizes(mods, 10**6)["largest_classes"]
                                      if c["name"] == "ragmed.pipeline.Pipeline"), None),
        **sizes(mods),
        "env_vars": {k: {"modules": v, "n": len(v)} for k, v in env.items()},
        "file_formats": {k: {"modules": v, "n": len(v)} for k, v in fmts.items()},
        "raw_sql_outside_index": raw_sql_users(mods),
        "import_cycles": cyc,
        "n_import_cycles": len(cyc),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    ap.add_argument("--label", default=None, help="a label recorded in the JSON (before / after)")
    ap.add_argument("--root", type=Path, default=None,
                    help="another source tree to measure (its ragmed/ package), e.g. `git archive COMMIT | tar -x -C DIR`")
    a = ap.parse_args(argv)
    res = measure(a.root / "ragmed" if a.root else PACKAGE)
    if a.root:
        res["command"] += " --root TREE"
    if a.label:
        res["label"] = a.label
        res["command"] += f" --label {a.label}"
    if a.json:
        res["command"] += f" --json {a.json.as_posix() if not a.json.is_absolute() else a.json.name}"
    print(f"{res['modules']} modules, {res['lines']} lines")
    print("largest classes:")
    for c in res["largest_classes"][:5]:
        print(f"  {c['lines']:5d} lines {c['methods']:3d} methods  {c['name']}")
    print("largest functions:")
    for f in res["largest_functions"][:5]:
        print(f"  {f['lines']:5d} lines  {f['name']}")
    print("environment variables (modules reading each):")
    for k, v in res["env_vars"].items():
        print(f"  {k}: {v['n']}  {', '.join(v['modules'])}")
    print("file formats (modules naming the file in code):")
    for k, v in res["file_formats"].items():
        print(f"  {k}: {v['n']}  {', '.join(v['modules'])}")
    print(f"raw SQL over meta.sqlite outside ragmed.index: {res['raw_sql_outside_index']}")
    print(f"import cycles: {res['n_import_cycles']}")
    for c in res["import_cycles"]:
        print("  " + " <-> ".join(c))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
