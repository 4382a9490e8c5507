"""Where ingressd's Kubernetes objects come from: manifest folders or a cluster."""
