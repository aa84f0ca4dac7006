"""A non-editable install puts one top-level name in site-packages: `codemix`."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_installs_only_the_codemix_namespace(tmp_path):
    def run(*args, **kw):
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, **kw)

    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
        str(REPO),
    )
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools builds inside the tree
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("codemix-*.whl")
    assert run(sys.executable, "-m", "venv", str(tmp_path / "env")).returncode == 0
    py = tmp_path / "env" / "bin" / "python"
    installed = run(str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel))
    assert installed.returncode == 0, installed.stderr[-2000:]
    site = Path(
        run(
            str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    ours = {p.name for p in site.iterdir()} - {p.name for p in site.glob("pip*")}
    ours -= {"_distutils_hack", "distutils-precedence.pth", "setuptools", "pkg_resources"}
    ours -= {p.name for p in site.glob("setuptools-*")}
    assert {n for n in ours if not n.endswith(".dist-info")} == {"codemix"}, ours
    assert {p.name for p in (site / "codemix").iterdir()} >= {
        "core",
        "cli",
        "models",
        "proxy_train",
        "optimizer",
        "analysis",
        "evaluation",
    }
    for name in ("models", "analysis", "optimizer", "proxy_train", "evaluation"):
        assert run(str(py), "-c", f"import {name}").returncode != 0, name
    help_ = run(str(tmp_path / "env" / "bin" / "codemix"), "--help")
    assert help_.returncode == 0 and "prepare" in help_.stdout, help_.stderr
    found = run(str(py), "-c", "import codemix.models.presets as p; print(p.__file__)")
    assert found.stdout.startswith(str(site)), found.stdout + found.stderr
