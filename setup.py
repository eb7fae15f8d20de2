"""Build hook: a wheel carries labs/ and testsuites/ as harness/data/ (see harness.paths).

They live outside the package so that a checkout keeps its plain layout; package-data
cannot reach them there, hence the copy at build time.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("labs", "testsuites")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout itself
            return
        for name in SHIPPED:
            shutil.copytree(name, Path(self.build_lib, "harness", "data", name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPy})
