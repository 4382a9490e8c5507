"""Kubernetes API plumbing: client configuration, leader election, status and Events, YAML."""
