"""Evaluation utilities: data loading and training pipelines for candidate architectures."""
