"""Benchmark of the receiver's data path against the storage's and the HTTP stack's own limits."""
