"""The npe2 manifest reaches sdists, wheels and editable installs as a regular file.

The top-level napari.yaml is its one source; setup.py's build_py copies it into the
package (napari_crfgan/napari.yaml, a generated file, never a symlink).
"""
import configparser
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
# What a build needs; everything else (tests, docs, build/, *.egg-info) stays out of the copy.
BUILD_FILES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "napari.yaml"]


def _build(src: Path, out: Path, use_build: bool) -> tuple[Path, Path]:
    """An sdist of src, and a wheel built from that sdist (as pip does from PyPI)."""
    if use_build:
        # No --sdist/--wheel: build makes the sdist, then the wheel from the unpacked sdist.
        cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    else:
        subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out)], cwd=src, check=True,
                       capture_output=True, text=True, timeout=300)
        unpacked = out / "unpacked"
        with tarfile.open(next(out.glob("*.tar.gz"))) as tar:
            # The data filter (Python 3.10.12+, 3.11.4+) refuses links and paths outside the target.
            tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(next(unpacked.iterdir()))],
                       check=True, capture_output=True, text=True, timeout=300)
    return next(out.glob("*.whl")), next(out.glob("*.tar.gz"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "napari_crfgan", src / "napari_crfgan",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "napari.yaml"))
    # A stale generated copy, as an old editable install leaves it: it must not reach the sdist or the wheel.
    (src / "napari_crfgan" / "napari.yaml").write_text("name: stale-copy\n")
    out = tmp_path_factory.mktemp("dist")
    try:
        return _build(src, out, use_build=importlib.util.find_spec("build") is not None)
    except subprocess.CalledProcessError as err:
        pytest.fail(f"building failed:\n{err.stdout}\n{err.stderr}")


def test_wheel_carries_the_top_level_manifest_and_its_entry_point(dists):
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        assert "napari_crfgan/napari.yaml" in names
        assert whl.read("napari_crfgan/napari.yaml") == MANIFEST.read_bytes()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
        record = whl.read(f"{info}/RECORD").decode()
    assert "napari_crfgan/napari.yaml," in record
    # the pretrained generators (pretrained:<name>), each at most 15 MB
    with zipfile.ZipFile(wheel) as whl:
        sizes = {n: whl.getinfo(n).file_size for n in whl.namelist() if n.startswith("napari_crfgan/weights/")}
    assert set(sizes) == {"napari_crfgan/weights/demo-brain.pt", "napari_crfgan/weights/demo-chest.pt"}
    assert all(0 < size <= 15 * 2**20 for size in sizes.values()), sizes
    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert parser["napari.manifest"]["napari-crfgan"].strip() == "napari_crfgan:napari.yaml"


def test_sdist_carries_napari_yaml_at_its_root_and_no_symlink(dists):
    _, sdist = dists
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        top = members[0].name.split("/")[0]
        assert not [m.name for m in members if m.issym() or m.islnk()]
        yaml = tar.getmember(f"{top}/napari.yaml")
        assert yaml.isfile()
        assert tar.extractfile(yaml).read() == MANIFEST.read_bytes()
        names = {m.name for m in members}
    # The build hook and its input list travel with the sdist, so a wheel built from it regenerates the copy.
    assert {f"{top}/setup.py", f"{top}/MANIFEST.in"} <= names
    assert sorted(n for n in names if n.endswith("napari.yaml")) == [f"{top}/napari.yaml"]


def test_installed_package_manifest_is_a_regular_copy_of_the_top_level_file():
    # Located the way npe2 resolves "napari_crfgan:napari.yaml": find_spec, without importing the package.
    spec = importlib.util.find_spec("napari_crfgan")
    assert spec is not None and spec.submodule_search_locations, "napari_crfgan is not installed"
    package_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    if package_dir != ROOT / "napari_crfgan":
        pytest.skip(f"napari_crfgan is found in {package_dir}, not in this checkout (no editable install)")
    packaged = package_dir / "napari.yaml"
    assert not packaged.is_symlink(), "napari_crfgan/napari.yaml must be generated by setup.py, not a symlink"
    assert packaged.is_file(), "run `pip install -e .` so setup.py's build_py generates napari_crfgan/napari.yaml"
    assert packaged.read_bytes() == MANIFEST.read_bytes(), "stale copy: re-run `pip install -e .`"
