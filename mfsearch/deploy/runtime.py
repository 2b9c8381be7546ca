"""ONNX Runtime sessions as mfsearch measures them: CPU execution provider, fixed threads, all graph optimisations.

Every session is made here, so latency of whole models (:mod:`mfsearch.evaluation.latency`) and of their
parts (:mod:`mfsearch.deploy.latency_table`) run under the same settings. The model goes to ONNX
Runtime as serialized bytes from memory: no file is written for a measurement.
"""

from __future__ import annotations

from typing import Any


class RuntimeMissing(ImportError):
    """A runtime that is not installed here; the message says what to install."""


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`RuntimeMissing` naming the packages to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeMissing(f"onnxruntime is not installed ({e}); install it with `pip install onnx onnxruntime` "
                             "(or `pip install -e .`), or choose --runtime eager") from None
    return onnxruntime


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise RuntimeMissing(f"onnx is not installed ({e}); install it with `pip install onnx onnxruntime` "
                             "(or `pip install -e .`)") from None
    return onnx


def ort_version() -> str:
    """``"onnxruntime 1.xx.y"`` (what a measurement records beside the device)."""
    return f"onnxruntime {import_onnxruntime().__version__}"


def session_options(threads: int | None = 1) -> Any:
    """Intra-op threads = ``threads`` (1 when unset), inter-op 1, sequential execution, all graph optimisations."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: constant-folding notices are not the user's business
    return so


def make_session(model: Any, threads: int | None = 1) -> Any:
    """An ``InferenceSession`` on the CPU execution provider for ``model`` (a ModelProto or serialized bytes)."""
    ort = import_onnxruntime()
    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    return ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])


def run_session(sess: Any, feeds: dict[str, Any]) -> list:
    """Outputs of one run (numpy arrays) for ``feeds`` (name -> numpy array)."""
    return sess.run(None, feeds)
