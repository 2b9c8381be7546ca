"""Analytic complexity accumulator (MACs and parameters), pycls style.

Every module of the model family has a static ``complexity(cx, ...)`` that mirrors its
``__init__`` and ``forward`` and adds to a :class:`Cx`. The per-op rules are fvcore's
(``FlopCountAnalysis``) so the analytic total equals fvcore's count of the eager model:

- conv: output elements x (C_in / groups) x k^2; linear: rows x in x out;
- matmul: prod(shape of A) x last dim of B; BatchNorm (eval, affine): 2 per element;
- LayerNorm: 5 per element; adaptive average pool: 1 per input element;
- activations, softmax, elementwise ops and channel shuffles: 0.
"""

from __future__ import annotations


class Cx:
    """Running totals plus the current feature-map size ``h x w`` (batch 1)."""

    __slots__ = ("h", "w", "macs", "params")

    def __init__(self, h: int, w: int) -> None:
        self.h = h
        self.w = w
        self.macs = 0
        self.params = 0

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> None:
        """A ``k x k`` conv with padding ``k // 2``; updates the map size."""
        if stride != 1 or k != 1:
            p = k // 2
            self.h = (self.h + 2 * p - k) // stride + 1
            self.w = (self.w + 2 * p - k) // stride + 1
        per = (cin // groups) * k * k
        self.macs += self.h * self.w * cout * per
        self.params += cout * per + (cout if bias else 0)

    def bn(self, c: int) -> None:
        """BatchNorm2d over ``c`` channels at the current map size."""
        self.macs += 2 * c * self.h * self.w
        self.params += 2 * c

    def linear(self, rows: int, fin: int, fout: int, bias: bool = True) -> None:
        self.macs += rows * fin * fout
        self.params += fin * fout + (fout if bias else 0)

    def layernorm(self, rows: int, d: int) -> None:
        self.macs += 5 * rows * d
        self.params += 2 * d

    def matmul(self, a_numel: int, n: int) -> None:
        """``A @ B`` with ``A`` of ``a_numel`` elements and ``B`` of last dim ``n``."""
        self.macs += a_numel * n
