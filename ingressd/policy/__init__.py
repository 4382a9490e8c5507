"""ingress-nginx's annotations and Secrets: parsing, validation, one module per feature."""
