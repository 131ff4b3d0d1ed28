"""The one direction of imports (docs/ARCHITECTURE.md), read from the source of every package.

    pipeline.py -> detect/ -> stage packages -> formats/ and runstate/ -> data/ and configs/

Stage packages never import each other, except the model and metric libraries listed in
``SHARED_LIBRARIES`` (the network definitions and their loader, the tIoU and AR@AN metrics);
file contracts come from ``formats``, run state from ``runstate``.
"""

from __future__ import annotations

import ast

from testkit import REPO_ROOT

STAGE_PACKAGES = ("backbone", "features", "proposals", "localize", "evaluation")
# package -> the project packages it may import
ALLOWED = {
    "configs": {"configs"},
    "data": {"data", "configs"},
    "runstate": {"runstate", "configs", "data"},
    "formats": {"formats", "runstate", "configs", "data"},
    **{stage: {stage, "formats", "runstate", "configs", "data"} for stage in STAGE_PACKAGES},
    # detection on new videos composes the stages' code (extract, BMN inference, classification)
    "detect": {"detect", *STAGE_PACKAGES, "formats", "runstate", "configs", "data"},
}
# modules of stage packages that other stage packages may use: libraries, not stages or contracts
SHARED_LIBRARIES = {
    "backbone.build", "backbone.tada2d", "backbone.tadaconv", "backbone.weights", "backbone.clips",
    "evaluation.proposal", "evaluation.tiou",
}
PROJECT_PACKAGES = set(ALLOWED) | {"pipeline"}


def imported_modules(path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a file, module-level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # "from backbone import finetune" imports the module backbone.finetune
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if node.module in PROJECT_PACKAGES]
    return found


def violations() -> list[str]:
    problems = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if top not in PROJECT_PACKAGES or top in allowed:
                    continue
                if top in STAGE_PACKAGES and package in STAGE_PACKAGES and (
                        module in SHARED_LIBRARIES or module == top):
                    continue
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line}: {package} imports {module}")
    return problems


def test_imports_go_one_way():
    assert violations() == []


def test_the_checker_sees_a_wrong_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a stage importing another stage, or run state importing a contract, is caught."""
    fake = tmp_path / "repo"
    (fake / "localize").mkdir(parents=True)
    (fake / "runstate").mkdir()
    (fake / "localize" / "x.py").write_text("from backbone.finetune import run_finetune\nimport backbone.build\n")
    (fake / "runstate" / "y.py").write_text("def f():\n    from formats.features import FeatureStore\n")
    monkeypatch.setattr(__import__(__name__), "REPO_ROOT", fake)
    assert sorted(violations()) == ["localize/x.py:1: localize imports backbone.finetune",
                                    "runstate/y.py:2: runstate imports formats.features"]
