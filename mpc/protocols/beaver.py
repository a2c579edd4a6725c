"""Beaver-triple multiplication for any linear secret-sharing scheme.

Responsibility: element-wise and matrix products of shared values from dealer triples, in one
communication round each.

Protocol (Beaver, "Efficient multiparty protocols using circuit randomization", CRYPTO 1991;
matrix triples as in Mohassel & Zhang, SecureML, S&P 2017):
  1. take a triple ([a], [b], [c]) with c = a*b (or C = A@B) from the dealer;
  2. open e = x - a and d = y - b together, in one round;
  3. output [z] = [c] + e*[b] + [a]*d + e*d  (the public e*d added once, per the scheme).
Security model: semi-honest; e and d are uniformly masked by a and b, so the opened values are
independent of x and y as long as the dealer is trusted and never reuses a triple. Traffic of a
matrix product is proportional to the operands, not to the product.
"""

from __future__ import annotations

import numpy as np

from mpc.protocols.base import Need, Protocol


class BeaverMultiplication(Protocol):
    """Mixin: `mul` and `matmul` by Beaver triples."""

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        alg = self.algebra
        a, b, c = self._need(Need.TRIPLES).triple(tuple(x.shape))
        e, d = self.open_many([alg.sub(x, a), alg.sub(y, b)])
        z = alg.add(c, alg.add(alg.mul(e, b), alg.mul(d, a)))
        return self.add_public(z, alg.mul(e, d))

    def matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        alg = self.algebra
        a, b, c = self._need(Need.MATRIX_TRIPLES).matrix_triple(tuple(x.shape), tuple(y.shape))
        e, d = self.open_many([alg.sub(x, a), alg.sub(y, b)])
        z = alg.add(c, alg.add(alg.matmul(e, b), alg.matmul(a, d)))
        return self.add_public(z, alg.matmul(e, d))
