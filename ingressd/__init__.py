"""ingressd: a Kubernetes Layer-7 ingress controller and reverse proxy."""

__version__ = "0.1.0"
