"""Studies: a grid of runs from one YAML file, executed locally or on Ray, resumable."""
