"""The layer-4 data path (nginx's stream module): PROXY protocol, SNI peek, TCP and UDP splicing."""
