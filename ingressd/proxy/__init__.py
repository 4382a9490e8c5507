"""The data path: client connections, upstream connections, HTTP heads."""
