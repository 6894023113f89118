"""Test helpers shipped with skylane, for our own tests and benchmarks and for users' tests:
a real control plane in a subprocess, and throwaway databases."""
