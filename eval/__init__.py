"""Probes and the synthetic-vs-natural comparison (see the evaluation issue)."""
