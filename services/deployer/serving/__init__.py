"""Serving, the deployer's second entrypoint: routing, micro-batching, the prediction log, loading."""
