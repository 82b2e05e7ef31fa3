"""vision3d: 3D vision from sparse inputs."""

__version__ = "0.1.0"
