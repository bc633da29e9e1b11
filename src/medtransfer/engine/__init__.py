"""Training machinery: input pipelines, feature cache, probe heads, fine-tuning."""
