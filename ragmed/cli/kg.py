"""``ragmed kg build | info | lookup | link``: thin wrappers over :mod:`ragmed.knowledge`."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click


@click.group()
def kg():
    """Build, inspect and query knowledge graphs; link text to concepts."""


@kg.command("build")
@click.option("--source", "sources", multiple=True, required=True, metavar="SPEC",
              help="open | icd10cm | hpo | mesh | radiology | uberon | obo:FILE | umls:DIR "
                   "(repeatable; combined into one graph).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory, e.g. knowledge/NAME.")
@click.option("--name", default=None, help="Graph name (default: the output directory's name).")
@click.option("--lang", "langs", multiple=True, default=("ENG",), show_default=True, help="UMLS: languages (LAT).")
@click.option("--sab", "sabs", multiple=True, help="UMLS: source vocabularies to keep, e.g. SNOMEDCT_US, MSH, RADLEX.")
@click.option("--sty", "stys", multiple=True, help="UMLS: semantic types to keep (TUI like T047 or name).")
@click.option("--rel", "rels", multiple=True, help="UMLS: relation types to keep (REL or RELA; default PAR CHD RB RN RO).")
@click.option("--keep-suppressed", is_flag=True, help="UMLS: keep rows whose SUPPRESS flag is O, E or Y.")
@click.option("--skip-bad-rows", is_flag=True, help="UMLS: skip and count malformed rows instead of stopping.")
@click.option("--link-type", "link_types", multiple=True,
              help="Semantic types the linker reports (default: the UMLS Disorders group, anatomy, imaging "
                   "procedures, spatial concepts, devices, contrast agents).")
@click.option("--no-merge", is_flag=True, help="Keep one node per source concept (do not merge by CUI / exact xref).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def build(sources, out, name, langs, sabs, stys, rels, keep_suppressed, skip_bad_rows, link_types, no_merge, as_json):
    """Build a knowledge graph from sources and save it (JSON + numpy; no pickle)."""
    import time

    from ragmed.knowledge import build_graph
    from ragmed.knowledge import DEFAULT_LINK_TYPES
    from ragmed.knowledge import save_graph
    from ragmed.knowledge import DEFAULT_RELATIONS, SUPPRESSED

    t0 = time.perf_counter()
    opts = {"languages": langs or None, "sabs": sabs or None, "semantic_types": stys or None,
            "suppress": () if keep_suppressed else SUPPRESSED, "relations": rels or DEFAULT_RELATIONS,
            "on_error": "skip" if skip_bad_rows else "raise"}
    G = build_graph(list(sources), merge=not no_merge, **opts)
    t1 = time.perf_counter()
    command = "ragmed kg build " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 2 else None
    path = save_graph(G, out, name=name, link_types=link_types or DEFAULT_LINK_TYPES, command=command)
    from ragmed.knowledge import read_manifest

    m = read_manifest(path)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    c = m["counts"]
    click.echo(f"knowledge graph {path} [{m['id']}]: {c['nodes']} concepts, {c['edges']} relations, "
               f"{c['linkable']} linkable, {c['with_cui']} with a UMLS CUI; built in {t1 - t0:.1f} s, "
               f"saved in {m['build_seconds']:.1f} s")
    for src, n in c["by_source"].items():
        click.echo(f"  {src}: {n}")
    for fname, rep in (m.get("load_report") or {}).items():
        if rep.get("skipped"):
            click.echo(f"  {fname}: skipped {rep['skipped']} malformed row(s), e.g. {rep['skipped_lines'][0]}")


@kg.command("info")
@click.argument("directory", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(directory, as_json):
    """Describe a knowledge graph (default: the bundled open default graph)."""
    from ragmed.knowledge import default_graph_path
    from ragmed.knowledge import read_manifest

    m = read_manifest(directory or default_graph_path())
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    c = m["counts"]
    click.echo(f"{m['id']}  ({directory or default_graph_path()})")
    click.echo(f"  concepts {c['nodes']}, relations {c['edges']}, linkable {c['linkable']}, with CUI {c['with_cui']}, "
               f"lexicon {c['lexicon_entries']} surface forms")
    click.echo("  by source: " + ", ".join(f"{k} {v}" for k, v in c["by_source"].items()))
    click.echo("  by relation: " + ", ".join(f"{k} {v}" for k, v in c["by_relation"].items()))
    for s in m.get("sources", []):
        ver = s.get("data_version") or s.get("version") or m.get("ragmed_version") or ""
        size = (f" ({s['concepts']} concepts, {s.get('synonyms', 0)} synonyms, {s.get('with_cui', 0)} with a CUI)"
                if "concepts" in s else "")
        click.echo(f"  source {s.get('name')} {ver}{size}: {s.get('licence') or 'licence not stated'}")
    click.echo(f"  created {m.get('created')} by ragmed {m.get('ragmed_version')}" +
               (f": {m['command']}" if m.get("command") else ""))


@kg.command("lookup")
@click.argument("term")
@click.option("--kg", "kg_dir", type=click.Path(), default=None, help="Knowledge directory (default: bundled graph).")
@click.option("--limit", type=int, default=10, show_default=True, help="At most this many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lookup(term, kg_dir, limit, as_json):
    """Find concepts by id, name or synonym, with parents and definition."""
    from ragmed.knowledge import load_graph

    g = load_graph(kg_dir)
    hits = g.lookup(term, limit=limit)
    if as_json:
        for h in hits:
            h["parents"] = g.parents(h["id"])
            click.echo(json.dumps(h, ensure_ascii=False))
        return
    if not hits:
        click.echo(f"no concept found for {term!r}")
        return
    for h in hits:
        cui = f"  CUI {h['cui']}" if h["cui"] else ""
        click.echo(f"{h['id']}  {h['name']}  [{h['source']}; {', '.join(h['types']) or 'untyped'}]{cui}")
        if h["synonyms"]:
            click.echo("    synonyms: " + "; ".join(h["synonyms"][:8]))
        parents = g.parents(h["id"])
        if parents:
            click.echo("    is a: " + "; ".join(f"{g.names[g.index[p]]} ({p})" for p in parents[:5]))
        if h["definition"]:
            click.echo("    definition: " + h["definition"][:300])
        xr = ", ".join(f"{k}:{'|'.join(v[:3])}" for k, v in h["xrefs"].items())
        if xr:
            click.echo("    xrefs: " + xr)


def _lines(text: str) -> list[str]:
    """Input lines: split on newlines only ("\\r\\n" too); a final newline does not start another line."""
    if text.endswith("\n"):
        text = text[:-1]
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


@kg.command("link")
@click.argument("text", required=False)
@click.option("--file", "file_", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Link every line of this file.")
@click.option("--kg", "kg_dir", type=click.Path(), default=None, help="Knowledge directory (default: bundled graph).")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per input line: {"text", "concepts": [{"id", "name", "source", "cui", "span", '
                                      '"negated", "uncertain", "score", "types", "method", "reason"}]}.')
@click.option("--fuzzy", is_flag=True, help="Also link paraphrases by MiniLM embeddings (slower; precision first).")
def link(text, file_, kg_dir, as_json, fuzzy):
    """Link TEXT (or every line of --file F, or of standard input with -) to concepts."""
    from ragmed.knowledge import load_graph

    if (text is None) == (file_ is None):
        raise click.UsageError("give TEXT, - (standard input) or --file F (exactly one)")
    if file_ is not None:
        raw = Path(file_).read_text(encoding="utf-8")
    elif text == "-":
        raw = click.get_text_stream("stdin").read()
    else:
        raw = text
    g = load_graph(kg_dir)
    lines = _lines(raw) if (raw or text is not None and text != "-") else []
    for line in lines:
        concepts = g.link(line, fuzzy=fuzzy)
        if as_json:
            click.echo(json.dumps({"text": line, "concepts": [c.to_json() for c in concepts]}, ensure_ascii=False))
            continue
        click.echo(line)
        for c in concepts:
            flags = "".join([" NEGATED" if c.negated else "", " uncertain" if c.uncertain else ""])
            cui = f" CUI {c.cui}" if c.cui else ""
            click.echo(f"  [{c.span[0]}:{c.span[1]}] {c.text!r} -> {c.id} {c.name} ({c.source}{cui}) "
                       f"score {c.score:.2f} {c.method}{flags}")


@kg.command("embed")
@click.argument("directory", type=click.Path(file_okay=False), required=False)
def embed(directory):
    """Precompute the fuzzy linker's concept-name embeddings (MiniLM) into the graph directory."""
    import time

    from ragmed.knowledge import default_graph_path, load_graph
    from ragmed.knowledge import FUZZY_FILE as FILE, FuzzyLinker

    t0 = time.perf_counter()
    g = load_graph(directory or default_graph_path())
    target = g.path / FILE
    fz = FuzzyLinker(g, build_to=target)
    click.echo(f"{target}: {len(fz.targets)} concept names embedded in {time.perf_counter() - t0:.1f} s")
