"""The layer rule of docs/architecture.md, read from the code's own imports (every import, also inside functions).

Imports point down only::

    cli → pipelines → runtime, runs → training, export, evaluation → sampling → data, models → diffusion

- ``tfddim/diffusion`` imports nothing else of tfddim;
- ``tfddim/models`` imports nothing from sampling, training or export (nor anything above them);
- nothing imports ``pipelines`` except the CLI (and benchmarks, outside the package);
- one import identity for the pipelines: ``tfddim.pipelines``, never a bare ``pipelines``.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a layer may import its own layer's modules (inside one package) and any lower layer
RANKS = {
    "diffusion": 0,
    "models": 1, "data": 1,
    "sampling": 2,
    "training": 3, "export": 3, "evaluation": 3,
    "runs": 4, "runtime": 4,
    "pipelines": 5,
    "cli": 6,
}


def _layer(module: str) -> str:
    """``tfddim.sampling.solvers.ddim`` → ``sampling``; ``tfddim`` itself → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules():
    """(module name, path) of every source file of the package, pipelines as ``tfddim.pipelines``."""
    for top, package in (("tfddim", "tfddim"), ("pipelines", "tfddim.pipelines")):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), os.path.join(ROOT, top))
                    stem = rel[:-3].replace(os.sep, ".")
                    if stem == "__init__":
                        stem = ""
                    elif stem.endswith(".__init__"):
                        stem = stem[: -len(".__init__")]
                    yield package + ("." + stem if stem else ""), os.path.join(folder, name)


def _imports(path: str):
    """Every absolute module imported by a file (``from a import b`` gives ``a.b`` as well as ``a``)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _script_entry(path: str, lineno: int) -> bool:
    """A pipeline's ``main()``, the ``python pipelines/X.py`` entry point, hands its flags to the CLI."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" and node.lineno <= lineno <= node.end_lineno
               for node in ast.walk(tree))


def _violations(modules=None):
    found = []
    for module, path in (_modules() if modules is None else modules):
        source = _layer(module)
        for lineno, target in _imports(path):
            if target == "pipelines" or target.startswith("pipelines."):
                found.append(f"{path}:{lineno} imports {target}: use tfddim.pipelines")
                continue
            if not target.startswith("tfddim.") or target.split(".")[1] not in RANKS:
                continue
            dest = _layer(target)
            if source == "" or dest == source:
                continue
            if source == "diffusion":
                found.append(f"{path}:{lineno}: tfddim.diffusion imports {target}")
            elif dest == "pipelines" and source != "cli":
                found.append(f"{path}:{lineno} imports {target}: only the CLI imports pipelines")
            elif RANKS[dest] >= RANKS[source] and not (source == "pipelines" and dest == "cli" and _script_entry(path, lineno)):
                found.append(f"{path}:{lineno}: {source} (layer {RANKS[source]}) imports {target} (layer {RANKS[dest]})")
    return found


def test_every_package_has_a_layer():
    packages = {name for name in os.listdir(os.path.join(ROOT, "tfddim"))
                if os.path.isdir(os.path.join(ROOT, "tfddim", name, "")) and not name.startswith(("_", "."))
                and name != "assets"}
    modules = {name[:-3] for name in os.listdir(os.path.join(ROOT, "tfddim")) if name.endswith(".py")} - {"__init__"}
    assert packages | modules <= set(RANKS), sorted((packages | modules) - set(RANKS))


def test_imports_point_down():
    assert _violations() == []


@pytest.mark.parametrize("module", ["tfddim.diffusion.schedules", "tfddim.diffusion.spacing", "tfddim.diffusion.kinds"])
def test_numpy_math_loads_without_tensorflow(module):
    import subprocess
    import sys

    code = f"import sys, {module}; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tfddim.sampling import sample\n")
    assert [t for _, t in _imports(str(bad))] == ["tfddim.sampling", "tfddim.sampling.sample"]
    assert len(_violations([("tfddim.models.fake", str(bad))])) == 2  # a network reaching up into the sampler
    assert _violations([("tfddim.evaluation.fake", str(bad))]) == []
    bad.write_text("import numpy\nfrom tfddim.pipelines import train\n")
    assert len(_violations([("tfddim.diffusion.fake", str(bad))])) == 2


def test_benchmarks_use_the_one_import_identity_of_the_pipelines():
    """``pipelines.x`` and ``tfddim.pipelines.x`` would be two module objects for one file."""
    bare = []
    for name in sorted(os.listdir(os.path.join(ROOT, "benchmarks"))):
        if name.endswith(".py"):
            path = os.path.join(ROOT, "benchmarks", name)
            bare += [f"{path}:{line} imports {target}" for line, target in _imports(path)
                     if target == "pipelines" or target.startswith("pipelines.")]
    assert bare == []
