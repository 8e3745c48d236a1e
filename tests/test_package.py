"""The package as pip installs it: a wheel and an sdist build from the checkout, the wheel
installs into a clean virtual environment, ``execve-tracker`` is on its PATH and runs, and
site-packages gets ``pybpf`` and ``execve_tracker`` but no top-level ``programs``."""

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from support import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)

# building and installing run tools with their own 300 s limit: the test's limit matches
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel and the sdist, built with this interpreter's setuptools (no downloads)."""
    out = tmp_path_factory.mktemp("dist")
    try:
        import setuptools
    except ImportError:
        skip_or_fail("setuptools is not installed for this Python")
    # pyproject.toml's [project] table is read from setuptools 61 on; an older one builds an
    # empty UNKNOWN-0.0.0 (a fresh Python 3.9 venv has setuptools 58)
    if int(setuptools.__version__.split(".")[0]) < 61:
        skip_or_fail(f"setuptools {setuptools.__version__} cannot build from pyproject.toml: "
                     "pip install 'setuptools>=61'")
    # a copy, so that building leaves no build/ or *.egg-info in the checkout
    source = out / "src"
    files = _run("git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard").stdout
    for name in files.split():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            target.write_bytes((ROOT / name).read_bytes())
    wheel = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-w", str(out), str(source))
    assert wheel.returncode == 0, wheel.stderr
    sdist = _run(sys.executable, "-c", "from setuptools import build_meta as b; "
                 f"print(b.build_sdist({str(out)!r}))", cwd=source)
    assert sdist.returncode == 0, sdist.stderr
    return next(out.glob("*.whl")), out / sdist.stdout.split()[-1]


def test_the_wheel_holds_the_packages_and_the_script(built):
    wheel, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("pybpf-")}
    assert tops == {"pybpf", "execve_tracker"}
    for module in ("pybpf/asm/builder.py", "execve_tracker/execve_bpf.py",
                   "execve_tracker/metrics.py", "execve_tracker/top.py", "execve_tracker/tree.py"):
        assert module in names, module
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA")))
    assert "Provides-Extra: metrics" in metadata.decode()
    # (older setuptools write "prometheus-client (>=0.16) ; extra == 'metrics'")
    assert re.search(r"^Requires-Dist: prometheus[-_]client ?\(?>=0\.16\)? ?; "
                     r"extra == .metrics.$", metadata.decode(), re.M)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "execve-tracker = execve_tracker.console:main" in \
        zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_sdist_holds_the_sources_and_tests(built):
    _, sdist = built
    names = tarfile.open(sdist).getnames()
    for path in ("pybpf/syscalls.py", "programs/execve.py", "bpf/program.c", "README.md",
                 "tests/elf/execve.o", "tools/setup.sh", "Makefile",
                 "deploy/systemd/execve-tracker.service", "deploy/kubernetes/daemonset.yaml",
                 "deploy/kubernetes/namespace.yaml", "deploy/kubernetes/Containerfile",
                 "deploy/grafana/execve-tracker.json", "bench/bench_service.py"):
        assert any(name.endswith("/" + path) for name in names), path


def test_the_wheel_installs_and_runs_in_a_clean_venv(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    # system site-packages for construct and pyelftools: nothing is downloaded
    made = _run(sys.executable, "-m", "venv", "--system-site-packages", str(venv))
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel))
    assert installed.returncode == 0, installed.stderr
    site = _run(str(python), "-c", "import execve_tracker, os; "
                "print(os.path.dirname(os.path.dirname(execve_tracker.__file__)))").stdout.strip()
    assert (Path(site) / "pybpf").is_dir() and (Path(site) / "execve_tracker").is_dir()
    assert not (Path(site) / "programs").exists()
    helped = _run(str(venv / "bin" / "execve-tracker"), "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    for option in ("-interval", "--metrics", "--top", "--tree"):
        assert option in helped.stdout, option
    dumped = _run(str(venv / "bin" / "execve-tracker"), "--dump", cwd=tmp_path)
    assert dumped.returncode == 0 and "count_execve" in dumped.stdout, dumped.stderr
