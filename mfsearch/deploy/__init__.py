"""Deployment: ONNX graphs and export, ONNX Runtime sessions, and a latency table that predicts latency.

- :func:`export_files` / :func:`resolve_source`: a preset, a config file or a study member as
  ONNX, YAML and a state dict (``mfsearch export``);
- :func:`model_proto`: the ONNX graph of a model (inference form, plain ops);
- :func:`load_table` / :func:`predict_latency`: per-unit latency measured once on a machine,
  summed for any config without building it (``mfsearch latency-table``). As a search objective
  or budget: ``table = load_table(path, threads=..., input_size=...)`` once, then
  ``predict_latency(cfg, table)`` per sample.

``onnx`` and ``onnxruntime`` are imported only when a graph is checked or run.
"""

from __future__ import annotations

from .export import ExportSource, export_files, resolve_source
from .latency_table import LatencyTable, TableError, build_table, load_table, predict_latency
from .onnx_graph import ExportError, model_proto

__all__ = ["ExportError", "ExportSource", "LatencyTable", "TableError", "build_table", "export_files",
           "load_table", "model_proto", "predict_latency", "resolve_source"]
