"""Beaver-triple multiplication for any linear secret-sharing scheme.

Responsibility: element-wise and matrix products of shared values from dealer triples, in one
communication round each.

Protocol (Beaver, "Efficient multiparty protocols using circuit randomization", CRYPTO 1991;
matrix triples as in Mohassel & Zhang, SecureML, S&P 2017, which also opens a matrix used in
many products once, sect. 4.2 "masking the data once"):
  1. take a triple ([a], [b], [c]) with c = a*b (or C = A@B) from the dealer;
  2. open e = x - a and d = y - b together, in one round;
  3. output [z] = [c] + e*[b] + [a]*d + e*d  (the public e*d added once, per the scheme).
  4. a matrix X used in many products (`mask_operand`) is opened once as E = X - A, with its
     first product; every product X @ y (or X^T @ y) takes a fresh (B, C = A @ B) for that A,
     and the later ones open only y - B.
  5. a product x * y whose x still awaits its fixed-point truncation (`mul_settling`, ring
     only) takes a truncation pair (r, r' = r >> f) whose r' is also the Beaver mask of the
     truncated x, (r, b, r', r' * b), and opens x - r with y - b: the truncation rides in the
     product's round (the masked evaluation of ABY2.0, Patra et al., USENIX Security 2021,
     applied to the truncation pair of Mohassel & Rindal, ABY3, CCS 2018).
  6. a product X @ y of a masked matrix with a vector y that awaits its exact truncation
     (`matmul_masked_settling`, ring only) opens y's truncation mask c = y + 2^62 + r
     (`mpc.protocols.truncation`) instead of a Beaver mask: trunc(y) = P + S with P public
     and S = (1 - 2 c_t) r_t 2^(63-m) - r_low shared, so X @ trunc(y) = E @ trunc(y) + A @ P
     + 2^(63-m) M @ (1 - 2 c_t) - A @ r_low with M = A * r_t (column-wise) and A @ r_low
     from the dealer: the truncation and the product in one round, exact.
Security model: semi-honest; e and d are uniformly masked by a and b, so the opened values are
independent of x and y as long as the dealer is trusted and never reuses a triple. A mask A is
opened against one matrix only; every product with it uses a fresh B. Traffic of a
matrix product is proportional to the operands, not to the product.
"""

from __future__ import annotations

import numpy as np

from mpc.algebra import Ring64
from mpc.protocols.base import MaskedOperand, Need, Protocol
from mpc.protocols.truncation import (
    OFFSET_BITS,
    masked_for_truncation,
    masked_share,
    opened_parts,
    truncate_exact,
)


class BeaverMultiplication(Protocol):
    """Mixin: `mul` and `matmul` by Beaver triples; over the ring, exact truncation."""

    def truncate(self, x: np.ndarray, bits: int) -> np.ndarray:
        """Over the ring: exact for |x| < 2^62 (`mpc.protocols.truncation`), one round; over a
        field: the dealer pair's probabilistic truncation (`Protocol.truncate`)."""
        if isinstance(self.algebra, Ring64):
            return truncate_exact(self, x, bits)
        return super().truncate(x, bits)

    @classmethod
    def exact_truncation(cls) -> bool:
        return isinstance(cls.algebra, Ring64) and cls.truncate is BeaverMultiplication.truncate

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        alg = self.algebra
        a, b, c = self._need(Need.TRIPLES).triple(tuple(x.shape))
        if isinstance(alg, Ring64) and x.shape == y.shape:
            return self._mul_ring(x, y, a, b, c)
        e, d = self.open_many([alg.sub(x, a), alg.sub(y, b)])
        z = alg.add(c, alg.add(alg.mul(e, b), alg.mul(d, a)))
        return self.add_public(z, alg.mul(e, d))

    def _mul_ring(
        self, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
    ) -> np.ndarray:
        """`mul` in Z_2^64 with numpy's wrap-around, written into buffers this party owns: e and
        d straight into one message, z accumulated in place (no concatenation copy, three
        fewer arrays of the operands' size)."""
        e, d = self._open_masked(x, a, y, b)
        return self._combine_ring(e, d, a, b, c, x.shape)

    def _open_masked(
        self, x: np.ndarray, a: np.ndarray, y: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Open x - a and y - b in one message (ring); flat, so that 0-d operands stay arrays."""
        n = x.size
        opening = np.empty(2 * n, dtype=np.uint64)
        np.subtract(x.reshape(-1), a.reshape(-1), out=opening[:n])
        np.subtract(y.reshape(-1), b.reshape(-1), out=opening[n:])
        opened = self.open_all(opening)
        return opened[:n], opened[n:]

    def _combine_ring(
        self,
        e: np.ndarray,
        d: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        c: np.ndarray,
        shape: tuple[int, ...],
    ) -> np.ndarray:
        """[z] = [c] + e*[b] + d*[a] + e*d for flat public e, d; z accumulated in place."""
        z: np.ndarray = np.multiply(e, b.reshape(-1))
        scratch = np.multiply(d, a.reshape(-1))
        np.add(z, scratch, out=z)
        np.add(z, c.reshape(-1), out=z)
        if self.rank in self.scheme.constant_holders():  # the public e*d, added once
            np.multiply(e, d, out=scratch)
            return self.add_public(z.reshape(shape), scratch.reshape(shape))
        return z.reshape(shape)

    def settles_in_products(self) -> bool:
        # Fusing replaces `truncate` and `mul` by the dealer-pair truncation and the Beaver
        # product: only where those are the ones in use (a protocol with its own truncation,
        # e.g. a local one, or its own product keeps them). The fused truncation is the
        # probabilistic one: `mpc.program` fuses only where its failure is admitted.
        return (
            type(self).truncate is BeaverMultiplication.truncate
            and type(self).mul is BeaverMultiplication.mul
            and isinstance(self.algebra, Ring64)
            and self.dealer is not None
            and Need.TRUNCATION_PAIRS in self.dealer.provides
        )

    def mul_settling(
        self, x: np.ndarray, x_bits: int, y: np.ndarray, y_bits: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Truncate x (and y) in the round of their product (ring only). One round.

        The dealer item is a truncation pair (r, r' = r_s >> bits) whose r' is also the Beaver
        mask of the truncated x: the round opens c = x - r (with y - b, or y - s for a second
        pair); then trunc(x) = r' + (c_s >> bits) as in `truncate`, and e = trunc(x) - r' =
        c_s >> bits is public without another opening, so z = c' + e*b + d*r' + e*d with
        c' = r' * b from the dealer. Every opened value is masked by fresh dealer randomness
        (c is uniform, as in `truncate`, and e is a function of it); error and failure bounds
        are those of `truncate`.
        """
        if x_bits <= 0 or y_bits not in (0, x_bits) or x.shape != y.shape:
            raise ValueError(f"mul_settling: bits {x_bits}, {y_bits}, shapes {x.shape}, {y.shape}")
        shape = tuple(x.shape)
        dealer = self._need(Need.TRUNCATION_PAIRS)
        if y_bits:
            r, s, r_shifted, s_shifted, c = dealer.truncating_triple(shape, x_bits, True)
            e, d = self._open_masked(x, r, y, s)
            _shift_signed(d, y_bits)
            y_settled = self.add_public(s_shifted, d.reshape(shape))
            b = s_shifted
        else:
            r, b, r_shifted, c = dealer.truncating_triple(shape, x_bits, False)
            e, d = self._open_masked(x, r, y, b)
            y_settled = y
        _shift_signed(e, x_bits)
        x_settled = self.add_public(r_shifted, e.reshape(shape))
        return self._combine_ring(e, d, r_shifted, b, c, shape), x_settled, y_settled

    def matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        alg = self.algebra
        a, b, c = self._need(Need.MATRIX_TRIPLES).matrix_triple(tuple(x.shape), tuple(y.shape))
        e, d = self.open_many([alg.sub(x, a), alg.sub(y, b)])
        z = alg.add(c, alg.add(alg.matmul(e, b), alg.matmul(a, d)))
        return self.add_public(z, alg.matmul(e, d))

    def mask_operand(self, x: np.ndarray) -> MaskedOperand:
        """Take a fresh dealer mask A for x (no rounds; E = X - A is opened by the first
        product, together with that product's other operand)."""
        a, number = self._need(Need.MATRIX_TRIPLES).matrix_mask(tuple(x.shape))
        return MaskedOperand(x, a, number)

    def settles_in_masked_products(self) -> bool:
        return (
            type(self).matmul_masked is BeaverMultiplication.matmul_masked
            and isinstance(self.algebra, Ring64)
            and self.dealer is not None
            and Need.MATRIX_TRIPLES in self.dealer.provides
        )

    def matmul_masked_settling(
        self, x: MaskedOperand, y: np.ndarray, bits: int, transposed: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """X @ trunc(y) (X^T @ ...) and trunc(y) for a vector y awaiting exact truncation by
        `bits` (|y| < 2^62): step 6 above. One round (with E = X - A the first time). The
        truncation's result is floor(y / 2^bits) or one less, as `truncate`."""
        if x.mask is None or y.ndim != 1 or not 0 < bits < OFFSET_BITS:
            raise ValueError(f"matmul_masked_settling: a masked matrix, a vector, bits {bits}")
        alg = self.algebra
        r, r_low, r_top, m, a_low = self._need(Need.MATRIX_TRIPLES).masked_truncating_triple(
            tuple(x.share.shape), tuple(y.shape), transposed, x.number, bits
        )
        masked = masked_for_truncation(self, y, r)
        if x.opened is None:
            x.opened, c = self.open_many([alg.sub(x.share, x.mask), masked])
        else:
            c = self.open_all(masked)
        public, sign = opened_parts(c, bits)
        settled = self.add_public(masked_share(self, r_low, r_top, sign, bits), public)
        e, a = (x.opened.T, x.mask.T) if transposed else (x.opened, x.mask)
        weight = np.asarray(np.uint64(1 << (63 - bits)))
        z = alg.add(alg.matmul(e, settled), alg.matmul(a, public))
        z = alg.sub(alg.add(z, alg.mul(alg.matmul(m, sign), weight)), a_low)
        return z, settled

    def matmul_masked(
        self, x: MaskedOperand, y: np.ndarray, transposed: bool = False
    ) -> np.ndarray:
        """X @ y (X^T @ y) with a fresh (B, C) for X's mask: opens y - B, and E = X - A the
        first time. One round."""
        if x.mask is None:
            return super().matmul_masked(x, y, transposed)
        alg = self.algebra
        b, c = self._need(Need.MATRIX_TRIPLES).masked_matrix_triple(
            tuple(x.share.shape), tuple(y.shape), transposed, x.number
        )
        if x.opened is None:
            x.opened, d = self.open_many([alg.sub(x.share, x.mask), alg.sub(y, b)])
        else:
            d = self.open_all(alg.sub(y, b))
        e, a = (x.opened.T, x.mask.T) if transposed else (x.opened, x.mask)
        z = alg.add(c, alg.add(alg.matmul(e, b), alg.matmul(a, d)))
        return self.add_public(z, alg.matmul(e, d))


def _shift_signed(c: np.ndarray, bits: int) -> None:
    """c := c_s >> bits in place (c a uint64 array this party owns, c_s its signed lift)."""
    signed = c.view(np.int64)
    np.right_shift(signed, bits, out=signed)
