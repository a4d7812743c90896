"""The package's architecture: subpackages in one layer order, no import cycles,
private names and Keras internals kept where they belong.

The whole tree is walked (`rglob`), so a module moved into a subpackage stays
checked. Every import counts, lazy ones inside functions included: a lazy
import that dodges a cycle is a cycle.
"""

import ast
import pathlib

import kprune

PACKAGE = pathlib.Path(kprune.__file__).parent

# Lowest first: a subpackage may import its own modules and those of the
# subpackages before it, never one after it.
LAYERS = [
    "_internal",   # every read of Keras' and LiteRT's private attributes
    "utils",       # atomic files, native logs, backend differences, argument checks
    "registry",    # what kprune knows of each layer type and keras.ops node
    "litert",      # running and timing .tflite files
    "sparsity",    # tfmot's API: schedules, masks, wrappers, apply/strip, callbacks
    "stats",       # parameters, sparsity and MACs of a model or a file
    "dependency",  # the channel dependency graph and plans
    "criteria",    # channel importance, sampling, least squares
    "channels",    # one-shot and gradual channel pruning
    "methods",     # reconstruction, layer-wise, SSS, distillation
    "transformers",  # KerasHub models rebuilt smaller, depth pruning, block criteria
    "quantization",  # tfmot's QAT API: fake quantization, wrappers, schemes, PQAT
    "llm",         # one-shot pruning from calibration data: Wanda, SparseGPT, OWL
    "export",      # conversion to TFLite, verification, the report
    "search",      # budgets, spaces, latency tables, the searches
    "cli",         # the `kprune` command and the demo
]
TOP_LEVEL = {"__init__", "__main__"}  # the public surface may import everything


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name, path, known):
    """The kprune modules `name` imports (anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("kprune"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                deps.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("kprune.")}
    return deps - {name}


def subpackage(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_subpackage_is_in_the_layer_order():
    found = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(LAYERS), f"subpackages {sorted(found)} vs the layer order {LAYERS}"
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL, f"modules outside a subpackage: {sorted(top - TOP_LEVEL)}"


def test_imports_follow_the_layer_order():
    known = modules()
    rank = {name: i for i, name in enumerate(LAYERS)}
    offenders = []
    for name, path in known.items():
        source = subpackage(name)
        if source in TOP_LEVEL:
            continue
        for dep in imports_of(name, path, known):
            target = subpackage(dep)
            if target == "__init__" and dep == "kprune":
                offenders.append(f"{name} imports the public package `kprune`")
            elif target in rank and rank[target] > rank[source]:
                offenders.append(f"{name} ({source}) imports {dep} ({target}), a later layer")
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles_between_modules():
    known = modules()
    edges = {name: {d for d in imports_of(name, path, known) if d in known and d != "kprune"}
             for name, path in known.items()}
    # A package's __init__ re-exports its modules: an edge module -> its own package is the public door.
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in edges.get(node, ()):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_modules_import_modules_not_their_packages_doors():
    """Inside kprune, code imports from the module that defines a name; a
    subpackage's `__init__` (its public door) is for users, and importing it
    from inside would tie every module of that subpackage together."""
    known = modules()
    offenders = []
    for name, path in known.items():
        if path.name == "__init__.py" or name == "kprune.__main__":
            continue
        for dep in imports_of(name, path, known):
            if dep in known and known[dep].name == "__init__.py" and dep != "kprune":
                offenders.append(f"{name} imports {dep}")
    assert not offenders, "\n".join(offenders)


def test_every_module_says_what_it_holds():
    missing = [name for name, path in modules().items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, missing


def test_subpackage_docstrings_name_what_they_may_import():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "May import" in doc, layer


def test_no_private_names_imported_across_modules():
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kprune"):
                offenders += [f"{name}: {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert not offenders, offenders


def test_private_attributes_of_keras_and_litert_are_read_only_in_internal():
    """`layer._query_dense`, `interpreter._get_ops_details()` ...: a Keras or
    LiteRT upgrade that renames one touches kprune/_internal alone."""
    offenders = []
    for name, path in modules().items():
        if subpackage(name) == "_internal":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in ("_asdict", "_replace", "_fields")):  # namedtuple API
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls", "sys"):  # sys._getframe: Python's
                    continue
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_layer_types_are_named_only_in_the_registry():
    """Only the registry branches on Keras layer classes (and the XNNPACK
    policy, whose list is what that runtime's sparse kernels accept)."""
    allowed = {"kprune.registry", "kprune._internal", "kprune.sparsity.pruning_policy"}
    offenders = []
    for name, path in modules().items():
        if any(name == a or name.startswith(a + ".") for a in allowed):
            continue
        text = path.read_text()
        for cls in ("L.Conv2D", "layers.Conv2D", "L.Dense", "layers.BatchNormalization",
                    "L.BatchNormalization", "layers.DepthwiseConv2D"):
            if f"isinstance(layer, {cls}" in text or f"isinstance(op, {cls}" in text:
                offenders.append(f"{name}: {cls}")
    assert not offenders, offenders


def test_test_modules_have_unique_names():
    # The tests folders have no __init__.py, so pytest imports each test file by its base name:
    # two files of one name fail to collect when one worker is given both.
    tests = pathlib.Path(__file__).parent
    names = {}
    for path in tests.rglob("*.py"):
        if path.name != "conftest.py" and ".venv" not in path.parts:
            names.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert not {name: paths for name, paths in names.items() if len(paths) > 1}
