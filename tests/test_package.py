"""The package a user installs: its dependency ranges hold the tested pins, and `pip install .` in a fresh virtual
environment gives the `cnmc` command, run from anywhere."""

import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import copy_project

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_dependency_range_holds_its_tested_pin_and_nothing_pinned_is_left_out() -> None:
    ranges = {Requirement(text).name.lower(): Requirement(text) for text in _project()["dependencies"]}
    pins = _pins()
    assert set(ranges) == set(pins)
    for name, requirement in ranges.items():
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, str(requirement), pins[name])
    python = f"{sys.version_info.major}.{sys.version_info.minor}.0"
    assert Requirement(f"python{_project()['requires-python']}").specifier.contains(python)


def test_the_licence_citation_changelog_and_secrets_example_are_there_and_secrets_stay_out_of_git() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text() and _project()["license"] == {"file": "LICENSE"}
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version" in citation and f"version: {_project()['version']}" in citation
    assert f"## {_project()['version']} " in (ROOT / "CHANGELOG.md").read_text()
    example = (ROOT / ".streamlit" / "secrets.toml.example").read_text()
    assert set(tomllib.loads(example)) == {"demo_mode"}  # the others are commented examples
    ignored = subprocess.run(["git", "check-ignore", ".streamlit/secrets.toml"], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, "secrets.toml must be ignored by git"


def _venv_seeing_this_environment(venv: Path) -> None:
    """A fresh virtual environment without packages of its own that sees this interpreter's (setuptools, pip and
    the dependencies: nothing is downloaded), whether this is a virtual environment or the system's. A venv's
    `--system-site-packages` would show the base interpreter's instead, which in a user's fresh venv lack them."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    inner = subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    paths = sysconfig.get_paths()
    outer = dict.fromkeys([paths["purelib"], paths["platlib"], site.getusersitepackages()])
    (Path(inner) / "outer-environment.pth").write_text("\n".join(outer) + "\n")


@pytest.mark.slow
def test_pip_install_gives_the_cnmc_command_that_runs_from_anywhere(tmp_path: Path) -> None:
    """Installed into a fresh virtual environment (this environment's packages visible, so nothing is downloaded)."""
    venv = tmp_path / "venv"
    _venv_seeing_this_environment(venv)
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # a copy: building writes build/ beside the code
    copy_project(source, leave_out=("samples/",))
    subprocess.run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pipeline/__main__.py" in names and "pipeline/models/lite.py" in names
    assert not [name for name in names if name.startswith(("tests/", "pages/", "bench/", "samples/"))]
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True, cwd=tmp_path
    )
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(venv), "the installed copy, not the checkout"
    helped = subprocess.run([venv / "bin" / "cnmc", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert helped.returncode == 0 and "train" in helped.stdout and "crossval" in helped.stdout
    missing = subprocess.run(
        [venv / "bin" / "cnmc", "report", str(tmp_path / "nowhere")], cwd=tmp_path, capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_the_container_and_the_space_agree_with_what_the_code_reads() -> None:
    """The Dockerfile sets exactly the writable folders the host-like browser test uses, on the tested Python, and
    the Space's configuration points at the port the container serves."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile and "requirements.txt" in dockerfile
    for setting in ("DEMO_MODE=1", "ARTIFACTS_DIR=/data/", "KERAS_HOME=/data/", "DEMO_DATA_DIR=/data/"):
        assert setting in dockerfile, setting
    code_reads = "".join(
        path.read_text() for path in [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "pages" / "common").glob("*.py")]
    )
    for variable in ("ARTIFACTS_DIR", "KERAS_HOME", "DEMO_DATA_DIR", "DEMO_MODE"):
        assert f'"{variable}"' in code_reads, variable
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "artifacts" not in ignored and "!artifacts/release" in ignored, "the image holds the release it serves"
    space = (ROOT / "hosting" / "huggingface" / "README.md").read_text()
    port = next(line.split(":")[1].strip() for line in space.splitlines() if line.startswith("app_port:"))
    assert f"EXPOSE {port}" in dockerfile and f"--server.port={port}" in dockerfile and "sdk: docker" in space
