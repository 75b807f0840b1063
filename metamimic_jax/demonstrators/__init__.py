"""Scripted demonstrators that produce diverse demonstrations."""
