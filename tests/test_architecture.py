"""The package's dependency rules, read from the source (``ast``; nothing is imported).

Rules (DESIGN.md, issue 11):
1. ``io`` imports no other stage (only the shared leaves: errors, types, text, settings, version).
2. ``encoders`` never import ``index``, ``select`` or ``generate``.
3. ``index`` never imports ``generate``.
4. ``select`` and ``generate`` never import ``io``.
5. nothing imports ``cli`` or ``serve`` (``ragmed serve``, in cli, starts the service: the one edge allowed).
6. ``cli`` and ``serve`` use the public API only: ``serve`` the pipeline (or an ``api`` module), config and the
   shared leaves; ``cli`` also the package root of the stage a command group is about (``ragmed.index``,
   ``ragmed.encoders`` …), never a submodule.
7. no import cycles between modules.
8. no private name (``_x``) imported from another package.
9. library code never writes ``os.environ`` and never touches global RNG / thread state (``torch.manual_seed``,
   ``np.random.seed``, ``random.seed``, ``torch.set_num_threads`` outside a scoped helper).
10. ``ragmed/text`` is a leaf: it imports no other ragmed module but ``errors``.

KNOWN_VIOLATIONS lists each case that lives in a file another issue owns and is being changed in parallel; the lead
removes an entry when that issue merges. An allowance that no longer matches anything fails the test (so the list
only shrinks).
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_metrics():
    spec = importlib.util.spec_from_file_location("ragmed_code_metrics", REPO / "eval" / "code_metrics.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cm = _load_metrics()
MODS = cm.load_modules()
GRAPH = cm.import_graph(MODS)

STAGES = ("io", "corpus", "encoders", "index", "domains", "knowledge", "select", "generate", "align", "pipeline",
          "serve", "cli", "eval", "integrations", "demo")
LEAVES = {"ragmed", "ragmed.version", "ragmed.errors", "ragmed.types", "ragmed.text", "ragmed.settings", "ragmed.cache",
          "ragmed.paths", "ragmed.registry"}

# (rule, importer, imported) -> the issue whose files hold it
KNOWN_VIOLATIONS: dict[tuple[str, str, str], str] = {
}
_used: set[tuple[str, str, str]] = set()


def _none(found: list[str]) -> None:
    assert not found, "\n" + "\n".join(found)


def stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _edges():
    for m in MODS.values():
        for target, attr, line in m.imports:
            r = cm.resolve(target, MODS)
            if r is not None and r != m.name:
                yield m, r, attr, line


def _check(rule: str, importer: str, imported: str) -> bool:
    """True when the case is a listed allowance (and records that it was used)."""
    key = (rule, importer, imported)
    if key in KNOWN_VIOLATIONS:
        _used.add(key)
        return True
    return False


def _violations(rule: str, pred) -> list[str]:
    out = []
    for m, r, attr, line in _edges():
        if pred(m.name, r, attr) and not _check(rule, m.name, r):
            out.append(f"{m.path.relative_to(REPO)}:{line} imports {r}{'.' + attr if attr else ''}")
    return sorted(set(out))


def test_io_imports_no_other_stage():
    _none(_violations("io", lambda a, b, _: stage(a) == "io" and stage(b) not in (None, "io")))


def test_encoders_never_import_index_select_generate():
    _none(_violations("encoders", lambda a, b, _: stage(a) == "encoders"
                       and stage(b) in ("index", "select", "generate")))


def test_index_never_imports_generate():
    _none(_violations("index", lambda a, b, _: stage(a) == "index" and stage(b) == "generate"))


def test_select_and_generate_never_import_io():
    _none(_violations("io-use", lambda a, b, _: stage(a) in ("select", "generate") and stage(b) == "io"))


def test_nothing_imports_cli_or_serve():
    def bad(a, b, _):
        if stage(b) not in ("cli", "serve") or stage(a) == stage(b) or a == "ragmed.__main__":
            return False  # (`python -m ragmed` is the command's entry point)
        return not (stage(a) == "cli" and stage(b) == "serve")  # `ragmed serve` starts the service

    _none(_violations("edge", bad))


def test_cli_and_serve_use_the_public_api_only():
    def bad(a, b, _):
        if stage(a) not in ("cli", "serve") or stage(b) == stage(a) or b in LEAVES:
            return False
        if stage(a) == "cli" and stage(b) == "serve":
            return b != "ragmed.serve" and not _check("public-api", a, b)
        if stage(a) == "serve":  # the service answers through the pipeline (or an api module) only
            return b not in ("ragmed.pipeline", "ragmed.api", "ragmed.config")
        return b.count(".") > 1 or b not in [f"ragmed.{s}" for s in STAGES] + ["ragmed.config", "ragmed.api"]

    _none(_violations("public-api", bad))


def test_no_import_cycles():
    """Listed edges (KNOWN_VIOLATIONS, rule "cycle") are taken out of the graph first; any cycle left fails."""
    g = {a: set(bs) for a, bs in GRAPH.items()}
    for rule, a, b in KNOWN_VIOLATIONS:
        if rule == "cycle" and b in g.get(a, ()):
            g[a].discard(b)
            _used.add((rule, a, b))
    _none([" <-> ".join(c) for c in cm.cycles(g)])


def test_no_private_names_across_packages():
    def pkg(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2])

    bad = []
    for m, r, attr, line in _edges():
        names = [attr] if attr else []
        mod_private = any(p.startswith("_") and not p.startswith("__") for p in r.split("."))
        if pkg(m.name) == pkg(r):
            continue
        if mod_private or any(n.startswith("_") and not n.startswith("__") for n in names):
            if not _check("private", m.name, r):
                bad.append(f"{m.path.relative_to(REPO)}:{line} imports {r}{'.' + attr if attr else ''}")
    _none(bad)


GLOBAL_STATE_CALLS = ("torch.manual_seed", "torch.cuda.manual_seed", "torch.cuda.manual_seed_all", "np.random.seed",
                      "numpy.random.seed", "random.seed", "torch.set_num_threads", "torch.use_deterministic_algorithms",
                      "transformers.set_seed", "set_seed")
# Not library code paths, or deliberate process settings, each with its reason:
SCOPED = {
    ("ragmed.generate.hf", "torch.set_num_threads"),  # torch_threads(): a context manager restoring the old value
    ("ragmed.encoders.text", "torch.set_num_threads"),  # set_torch_threads(): the configured thread count
    ("ragmed.cli", "os.environ write"),  # the command is the process's own main: offline / quiet libraries
    ("ragmed.index.ray_build", "torch.set_num_threads"),  # a Ray actor is its own process: its share of the cores
}
GLOBAL_STATE_ALLOWED: dict[tuple[str, str], str] = {}
_used_global: set[tuple[str, str]] = set()


def _global_state_writes() -> list[tuple[str, str, int]]:
    out = []
    for m in MODS.values():
        forked = set()  # calls inside `with torch.random.fork_rng(...)`: the global state is restored after
        for node in ast.walk(m.tree):
            if isinstance(node, ast.With) and any("fork_rng" in ast.unparse(i.context_expr) for i in node.items):
                forked.update(id(n) for b in node.body for n in ast.walk(b))
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Call) and id(node) not in forked:
                f = ast.unparse(node.func)
                if f in GLOBAL_STATE_CALLS:
                    out.append((m.name, f, node.lineno))
                if f in ("os.environ.setdefault", "os.environ.update", "os.putenv", "environ.setdefault"):
                    out.append((m.name, "os.environ write", node.lineno))
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Subscript) and ast.unparse(t.value) in ("os.environ", "environ"):
                        out.append((m.name, "os.environ write", node.lineno))
    return out


def test_no_environment_writes_or_global_rng_in_library_code():
    bad = []
    for mod, what, line in _global_state_writes():
        if (mod, what) in SCOPED:
            continue
        if (mod, what) in GLOBAL_STATE_ALLOWED:
            _used_global.add((mod, what))
            continue
        bad.append(f"{mod}:{line} {what}")
    _none(bad)


def test_text_is_a_leaf():
    bad = [f"{m.name} imports {r}" for m, r, _, _ in _edges()
           if m.name.startswith("ragmed.text") and not r.startswith("ragmed.text") and r != "ragmed.errors"]
    _none(bad)


def test_the_rules_see_the_code():
    """The parser finds the package's real imports (a rule over an empty graph would pass vacuously)."""
    assert len(MODS) > 50
    assert {"ragmed.index", "ragmed.encoders", "ragmed.domains"} <= GRAPH["ragmed.pipeline.components"]
    assert "ragmed.pipeline.query" in GRAPH["ragmed.pipeline"]
    assert any(stage(b) == "encoders" for b in GRAPH["ragmed.index.build"])
    assert "ragmed.errors" in GRAPH["ragmed.io.readers"]


def test_cycle_detector_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cm.cycles(g) == [["a", "b", "c"]]


@pytest.mark.parametrize("rule_test", [test_no_import_cycles, test_cli_and_serve_use_the_public_api_only,
                                       test_no_environment_writes_or_global_rng_in_library_code])
def test_every_allowance_still_matches_something(rule_test):
    """An allowance that matches nothing any more must be removed (the lists only shrink)."""
    rule_test()
    if rule_test is test_no_environment_writes_or_global_rng_in_library_code:
        stale = set(GLOBAL_STATE_ALLOWED) - _used_global
        assert not stale, f"remove these stale allowances: {sorted(stale)}"
    elif rule_test is test_no_import_cycles:
        stale = {k for k in KNOWN_VIOLATIONS if k[0] == "cycle"} - _used
        assert not stale, f"remove these stale allowances: {sorted(stale)}"
    else:
        stale = {k for k in KNOWN_VIOLATIONS if k[0] == "public-api"} - _used
        assert not stale, f"remove these stale allowances: {sorted(stale)}"


ENV_ALLOWED: dict = {}


def test_each_environment_variable_is_read_in_settings_only():
    bad, used = [], set()
    for var, modules in cm.env_reads(MODS).items():
        for mod in modules:
            if mod == "ragmed.settings":
                continue
            if (var, mod) in ENV_ALLOWED:
                used.add((var, mod))
                continue
            bad.append(f"{mod} reads ${var} (read it from ragmed.settings)")
    _none(bad)
    assert used == set(ENV_ALLOWED), f"stale allowances: {sorted(set(ENV_ALLOWED) - used)}"
