"""Package layout that pyproject.toml alone cannot express.

``pipelines/`` sits at the top of the repository (docs/ARCHITECTURE.md, Stages and
pipelines) and ships inside the package as ``vision3d.pipelines``, where the code
finds it with importlib.resources: a wheel or ``pip install .`` runs from any folder.
Everything else (metadata, dependencies, package data) is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vision3d", "vision3d.*"]) + ["vision3d.pipelines"],
    package_dir={"vision3d.pipelines": "pipelines"},
)
