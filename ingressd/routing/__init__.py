"""Routing: objects -> table (``build``) and request -> action (``decide``)."""
