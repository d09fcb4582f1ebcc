"""Build hook only: all metadata lives in pyproject.toml.

The npe2 manifest has one source file, the top-level napari.yaml. The
napari.manifest entry point (napari_crfgan:napari.yaml) needs it inside the
package, so build_py copies it there instead of relying on a symlink, which
does not survive every checkout or sdist (Windows, some archivers).
"""
import logging
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "napari_crfgan"
MANIFEST = "napari.yaml"
SOURCE = os.path.join(ROOT, MANIFEST)


class build_py_with_manifest(build_py):
    """build_py that also puts the top-level napari.yaml into the package."""

    def run(self):
        super().run()
        if not os.path.isfile(SOURCE):
            raise FileNotFoundError(f"{SOURCE} is missing: it is the npe2 manifest's source file")
        # PEP 660 editable installs (setuptools>=64) import the package from the source tree, so the copy goes there.
        if getattr(self, "editable_mode", False):
            target = os.path.join(ROOT, PACKAGE, MANIFEST)
        else:
            target = self._built_manifest()
        self._copy_manifest(target)

    def _built_manifest(self):
        return os.path.join(self.build_lib, PACKAGE, MANIFEST)

    def _copy_manifest(self, target):
        # A leftover symlink from older checkouts would make the copy write onto its own source.
        if os.path.islink(target):
            os.unlink(target)
        with open(SOURCE, "rb") as f:
            wanted = f.read()
        if os.path.isfile(target):
            with open(target, "rb") as f:
                if f.read() == wanted:
                    return
        self.mkpath(os.path.dirname(target))
        self.announce(f"copying {SOURCE} -> {target}", level=logging.INFO)
        # copyfile rather than copy_file: a stale copy must be replaced even when its mtime is newer.
        shutil.copyfile(SOURCE, target)

    def get_outputs(self, include_bytecode=True):
        # install --record and the wheel's file list should name the generated file too.
        outputs = super().get_outputs(include_bytecode)
        built = self._built_manifest()
        return outputs if built in outputs else [*outputs, built]

    def get_output_mapping(self):
        # Strict editable installs link each build_lib path to its source; this one's source is the top-level file.
        mapping = super().get_output_mapping()
        mapping[self._built_manifest()] = SOURCE
        return mapping


setup(cmdclass={"build_py": build_py_with_manifest})
