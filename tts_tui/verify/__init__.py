"""Verifiers (scorers), answer extraction and equivalence."""
