"""Shared test helpers: tiny models, synthetic stores, prompt pairs, workflow runs, scripts."""
