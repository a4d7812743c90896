"""MkDocs hook: benchmark pages from committed results, and the API reference check.

Two jobs, both run by `mkdocs build` / `mkdocs serve` (`hooks:` in mkdocs.yml):

1. **Benchmark pages.** Every `<name>.md` in the results folder (one setting:
   `extra.benchmark_results` in mkdocs.yml, a path relative to the repository)
   becomes the page `benchmarks/results/<name>.md`, listed in the navigation
   under "Benchmarks" and in the table that replaces `<!-- benchmark-results -->`
   on `benchmarks/index.md`. The page says when the run was made and on what,
   read from `<name>.json` beside it when there is one (any of the usual
   date/environment keys), and when the file was last committed. Links in a
   result file point into the repository, not into the site, so they are
   rendered as plain text. A missing folder or a result without JSON is not
   an error: the index says there is nothing, the page says what it lacks.

2. **API check.** After every page is rendered, each name of `kprune.__all__`
   must have a docstring and must be rendered on a page under `api/` (by
   mkdocstrings, under any path that resolves to the same object: `kprune.X`
   today, `kprune.<namespace>.X` after the reorganisation); each module
   rendered there with an `__all__` must render all of it. A failure is a
   warning, so `mkdocs build --strict` fails.

The package is read statically with griffe (as mkdocstrings reads it): the
check does not import TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess

import griffe
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.plugins.kprune_docs")

PLACEHOLDER = "<!-- benchmark-results -->"
PAGES_DIR = "benchmarks/results"  # where the generated pages live in the site
NAV_SECTION = "Benchmarks"
PACKAGE = "kprune"
API_PREFIX = "api/"

DATE_KEYS = ("generated", "date", "finished", "started", "timestamp", "when", "time")
ENV_CONTAINERS = ("environment", "env", "machine", "meta", "platform_info")
ENV_KEYS = ("platform", "cpus", "python", "tensorflow", "keras", "jax", "torch", "backend",
            "litert", "mode", "quick", "load_average", "load")

_state: dict = {}

# Griffe's complaints about a docstring's *layout* that the Google parser cannot
# read (kprune documents a few arguments together: "a / b / c: ..."). They are
# logged as information, not warnings, so that --strict does not fail on them;
# the API check below still fails on a missing docstring.
TOLERATED_GRIFFE_MESSAGES = ("Failed to get 'name: description' pair",)


class _Tolerate(logging.Filter):
    def filter(self, record):
        if record.levelno == logging.WARNING and any(
                m in record.getMessage() for m in TOLERATED_GRIFFE_MESSAGES):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "kprune_docs: docstring layout: " + record.getMessage(), ()
        return True


_TOLERATE = _Tolerate()


# ------------------------------------------------------------------ benchmarks
def _results_dir(config) -> str:
    setting = (config.extra or {}).get("benchmark_results", "benchmarks")
    return os.path.normpath(os.path.join(os.path.dirname(config.config_file_path), setting))


def _title_of(name: str) -> str:
    short = name[len("results_"):] if name.startswith("results_") else name
    return short.replace("_", " ").replace("-", " ").strip().capitalize() or name


def _nav_title(name: str, heading: str | None) -> str:
    """The file name says what a result is; a bare `results` says nothing, so its heading does."""
    title = _title_of(name)
    return heading.strip("`") if title.lower() == "results" and heading else title


def _git_date(path: str) -> str | None:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", os.path.basename(path)],
                             cwd=os.path.dirname(path), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _scalar(value) -> str | None:
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return None


def _metadata(json_path: str) -> tuple[str | None, list[tuple[str, str]], str | None]:
    """(run date, environment rows, problem) read from a result's JSON, if any."""
    if not os.path.isfile(json_path):
        return None, [], "no JSON beside it"
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        return None, [], f"its JSON could not be read ({e})"
    if not isinstance(data, dict):
        return None, [], None
    scopes = [data] + [data[k] for k in ENV_CONTAINERS if isinstance(data.get(k), dict)]
    date = next((_scalar(s[k]) for s in scopes for k in DATE_KEYS if _scalar(s.get(k))), None)
    env, seen = [], set()
    for scope in scopes:
        for key in ENV_KEYS:
            value = _scalar(scope.get(key))
            if value is not None and key not in seen:
                env.append((key, value))
                seen.add(key)
    return date, env, None


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _unlink(markdown: str) -> str:
    """Links of a result file point into the repository: keep the text, drop the link."""

    def repl(m):
        image, text, target = m.groups()
        if target.startswith(("http://", "https://")) and not image:
            return m.group(0)
        return text or f"`{target}`"

    return _LINK.sub(repl, markdown)


def _collect_results(config) -> list[dict]:
    where = _results_dir(config)
    repo = os.path.dirname(config.config_file_path)
    if not os.path.isdir(where):
        log.info("kprune_docs: no benchmark results folder %s", where)
        return []
    results = []
    for fname in sorted(os.listdir(where)):
        name, ext = os.path.splitext(fname)
        if ext != ".md" or name.lower() in ("readme", "index"):
            continue
        md_path = os.path.join(where, fname)
        with open(md_path, encoding="utf-8") as f:
            body = f.read()
        date, env, problem = _metadata(os.path.join(where, name + ".json"))
        heading = re.match(r"\s*#\s+(.+)\n", body)
        results.append({
            "name": name, "md": md_path, "rel": os.path.relpath(md_path, repo).replace(os.sep, "/"),
            "body": body, "heading": heading.group(1).strip() if heading else None,
            "title": _nav_title(name, heading.group(1).strip() if heading else None),
            "date": date, "env": env, "problem": problem,
            "committed": _git_date(md_path), "uri": f"{PAGES_DIR}/{name}.md",
        })
    return results


def _page(result: dict) -> str:
    body = _unlink(result["body"])
    if result["heading"]:
        title_line, rest = body.lstrip().split("\n", 1)
    else:
        title_line, rest = f"# {result['title']}", body
    facts = [f"Source: `{result['rel']}`, rendered as committed."]
    if result["date"]:
        facts.append(f"Run: {result['date']}.")
    if result["committed"]:
        facts.append(f"Last committed: {result['committed']}.")
    if result["problem"]:
        facts.append(f"No run date or environment: {result['problem']}.")
    if result["env"]:
        facts.append("Environment: " + ", ".join(f"{k} `{v}`" for k, v in result["env"]) + ".")
    lines = [title_line, "", '!!! info "About these figures"', "", "    " + " ".join(facts), "",
             "    How the benchmarks are run and what they measure: [Benchmarks](../index.md).", ""]
    return "\n".join(lines) + "\n" + rest


def _index_table(results: list[dict], where: str) -> str:
    if not results:
        return f"*No committed benchmark results were found in `{where}`.*\n"
    rows = ["| results | file | run | last committed |", "|---|---|---|---|"]
    for r in results:
        rows.append(f"| [{r['title']}](results/{r['name']}.md) | `{r['rel']}` | "
                    f"{r['date'] or '-'} | {r['committed'] or '-'} |")
    return "\n".join(rows) + "\n"


def _add_to_nav(nav, entries) -> None:
    for item in nav:
        if isinstance(item, dict) and NAV_SECTION in item and isinstance(item[NAV_SECTION], list):
            item[NAV_SECTION].append({"Results": entries})
            return
    nav.append({NAV_SECTION: [{"Results": entries}]})


def on_config(config):
    griffe_log = logging.getLogger("mkdocs.plugins.griffe")
    if _TOLERATE not in griffe_log.filters:
        griffe_log.addFilter(_TOLERATE)
    results = _collect_results(config)
    _state["results"] = results
    _state["ids"] = {}
    if results and config.nav is not None:
        _add_to_nav(config.nav, [{r["title"]: r["uri"]} for r in results])
    return config


def on_files(files, config):
    for r in _state.get("results", []):
        files.append(File.generated(config, r["uri"], content=_page(r)))
    return files


def on_page_markdown(markdown, page, config, files):
    if PLACEHOLDER in markdown:
        rel = os.path.relpath(_results_dir(config), os.path.dirname(config.config_file_path))
        markdown = markdown.replace(PLACEHOLDER, _index_table(_state.get("results", []), rel))
    return markdown


def on_serve(server, config, builder):
    if os.path.isdir(_results_dir(config)):
        server.watch(_results_dir(config))
    return server


# ------------------------------------------------------------------- API check
_ID = re.compile(r'\bid="(%s(?:\.[\w]+)*)"' % PACKAGE)


def on_page_content(html, page, config, files):
    if page.file.src_uri.startswith(API_PREFIX):
        _state.setdefault("ids", {})[page.file.src_uri] = set(_ID.findall(html))
    return html


def _target(collection, path):
    try:
        obj = collection[path]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        return obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _exported(collection, path):
    """The object a public name refers to at run time.

    `from kprune.search.algorithms.admm import admm` in `kprune/__init__.py` rebinds the attribute
    `kprune.admm` from the submodule to the function; griffe keeps the
    submodule under that name (and mkdocstrings does not render it as a
    member of `kprune`), so a module that holds a member of its own name
    stands for that member.
    """
    obj = _target(collection, path)
    name = path.rsplit(".", 1)[-1]
    if obj is not None and obj.is_module and name in obj.members:
        return _target(collection, f"{obj.path}.{name}")
    return obj


def check_api(ids_by_page: dict, search_path: str) -> list[str]:
    """Problems of the API reference: names without docstring or not rendered."""
    loader = griffe.GriffeLoader(search_paths=[search_path])
    package = loader.load(PACKAGE)
    loader.resolve_aliases(implicit=False, external=False)
    collection = loader.modules_collection
    problems = []
    ids = set().union(*ids_by_page.values()) if ids_by_page else set()
    rendered = {t.path for t in (_target(collection, i) for i in ids) if t is not None}
    for name in [str(n) for n in (package.exports or [])]:
        obj = _exported(collection, f"{PACKAGE}.{name}")
        if obj is None:
            problems.append(f"`{PACKAGE}.{name}` is in `__all__` but cannot be resolved")
            continue
        if obj.docstring is None or not obj.docstring.value.strip():
            problems.append(f"`{PACKAGE}.{name}` ({obj.path}) has no docstring")
        if obj.path not in rendered:
            problems.append(f"`{PACKAGE}.{name}` is in `__all__` but on no page under {API_PREFIX}")
    for page_ids in ids_by_page.values():
        for mid in sorted(page_ids):
            module = _target(collection, mid)
            if module is None or not module.is_module or not module.exports:
                continue
            for name in [str(n) for n in module.exports]:
                member = _exported(collection, f"{mid}.{name}")
                if member is None or member.path not in rendered:
                    problems.append(f"`{mid}.{name}` is in `{mid}.__all__` but not rendered with it")
    return problems


def on_env(env, config, files):
    ids_by_page = _state.get("ids", {})
    if not ids_by_page:
        log.warning("kprune_docs: no API page was rendered (pages under %s)", API_PREFIX)
        return env
    for problem in check_api(ids_by_page, os.path.dirname(config.config_file_path)):
        log.warning("kprune_docs: API reference: %s", problem)
    return env
