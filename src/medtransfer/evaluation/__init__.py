"""Metrics on whole splits and seeded percentile bootstrap CIs (model-agnostic: no image code here)."""
