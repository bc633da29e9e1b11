"""Backbones: the catalog of short names, weight loading and feature pooling."""
