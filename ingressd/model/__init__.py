"""The pipeline's data: Kubernetes objects and snapshots, the routing table, route policy."""
