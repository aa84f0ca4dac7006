"""codemix: pick the code share and stage schedule of a pretraining mixture from proxy runs.

Installed, the packages are `codemix.core` (errors, counts, files), `codemix.models`,
`codemix.proxy_train`, `codemix.optimizer`, `codemix.analysis`, `codemix.evaluation` and
`codemix.cli`; in the repository the middle five are top-level folders, which
`pyproject.toml` maps into this namespace. A checkout used without installing
(`PYTHONPATH=.` on a bare accelerator host) finds them through the repository root added to
this package's path below.
"""

from pathlib import Path as _Path

_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "proxy_train").is_dir():
    __path__.append(str(_root))  # noqa: F821  (a package's __path__ is set by the import system)
