"""Test doubles (only the TensorRT one: the project's rule is no mocks except that double)."""
