"""Data sources, the SampleTable they all produce, and splits."""
