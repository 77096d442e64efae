"""Throwaway local mail servers for tests, benchmarks and the demo."""
