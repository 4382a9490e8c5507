"""ingressd: a Kubernetes Layer-7 ingress controller and reverse proxy."""

from ._build import BUILD

__version__ = "0.1.0"
__all__ = ["BUILD", "__version__"]
