"""Package layout that pyproject.toml alone cannot express.

``pipelines/`` and ``configs/`` sit at the top of the repository (docs/ARCHITECTURE.md,
Stages and pipelines) and ship inside the package as ``vision3d.pipelines`` and
``vision3d.configs``, where the code finds them with importlib.resources: a wheel or
``pip install .`` runs every command (and the app finds its presets) from any folder.
Everything else (metadata, dependencies, package data) is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vision3d", "vision3d.*"]) + ["vision3d.pipelines", "vision3d.configs"],
    package_dir={"vision3d.pipelines": "pipelines", "vision3d.configs": "configs"},
)
