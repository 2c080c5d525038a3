"""The rank scheme's ``stable`` tie order: each cell's genes by normalized value, highest first,
ties by ascending token id — one order, whatever the CPU, the input's column order or layout,
the batch size or the thread count.

The value is ``count / total * 10_000 / median`` in float64, each division a true one
(:data:`~atlasprep.tokenize.rank.STABLE_ARITHMETIC`): IEEE arithmetic, so the same bits on every
CPU, and the same for a dense or sparse, float32 or integer X. A cell's genes are sorted on the
pair (value, token), which no two entries share unless they name one gene (a gene named by two
input columns has one token: its entries give the same tokens in either order).

The kernel (:func:`rank_stable_rows`) sorts each cell without numpy's sort. Each negated value
is mapped to a 64-bit key whose unsigned order is the float order (``-0.0`` as ``0.0``; NaN,
which valid counts never give, last, as numpy puts it). The key's high 32 bits are sorted by a
least-significant-digit radix sort (8-bit digits; a digit that is the same for every gene of the
cell is skipped), carrying ``low 32 bits << 32 | token`` as a 64-bit payload; then each run of
equal high halves — the genes whose values agree in their first 32 bits, exact ties among them —
is sorted on its payload, which completes the order on (value, token). Short cells are sorted by
insertion on (high, payload) directly. Cells are independent, so the rows of a batch are split
among threads (the kernel releases the GIL) and the output cannot depend on how many there are.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["normalized", "rank_stable_rows"]

_SHORT = 32  # cells (or tie runs) up to this many genes: insertion sort
_SIGN = np.uint64(1 << 63)
_NAN_BITS = np.uint64(0x7FF8_0000_0000_0000)


@numba.njit(cache=True, nogil=True, inline="always")
def normalized(stored, col, scale, scale32, norms, target_sum, ts32, reciprocal, single):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One gene's value, ``X / n_counts * 10_000 / median``, with Geneformer's arithmetic
    (:class:`~atlasprep.tokenize.rank.Arithmetic`): ``scale`` is the cell's operand of the first
    step (``scale32`` the same in float32), ``norms`` the genes' operands of the last."""
    if single:  # X / n_counts * 10_000 in float32, then the float64 medians
        x32 = np.float32(stored)
        step = (x32 * scale32 if reciprocal else x32 / scale32) * ts32
        scaled = np.float64(step)
    else:
        x = np.float64(stored)
        scaled = (x * scale if reciprocal else x / scale) * target_sum
    return scaled * norms[col] if reciprocal else scaled / norms[col]


# error_model="numpy": a total of 0 gives inf values (as numpy divides), not ZeroDivisionError
@numba.njit(cache=True, nogil=True, error_model="numpy")
def rank_stable_rows(lo, hi, indptr, indices, data, scales, norms, token_ids, target_sum, starts, out, keep):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Rows ``lo:hi``: each row's expressed vocabulary genes in the stable order, its first
    ``keep`` tokens written at ``out[starts[row]:]``. ``scales`` are the cells' totals and
    ``norms`` the genes' medians (float64): the values are true divisions."""
    widest = 1
    for row in range(lo, hi):
        widest = max(widest, indptr[row + 1] - indptr[row])
    cast = np.empty(1, dtype=np.float64)  # a value's bits, read through a uint64 view
    bits = cast.view(np.uint64)
    high = np.empty(widest, dtype=np.uint32)
    payload = np.empty(widest, dtype=np.uint64)
    spare_high = np.empty(widest, dtype=np.uint32)
    spare_payload = np.empty(widest, dtype=np.uint64)
    counts = np.empty((4, 256), dtype=np.int64)
    ts32 = np.float32(target_sum)
    for row in range(lo, hi):
        scale = scales[row]
        scale32 = np.float32(scale)
        n = 0
        stored, columns = data[indptr[row] : indptr[row + 1]], indices[indptr[row] : indptr[row + 1]]
        for e in range(len(stored)):  # over views, from 0: no wrapped-around index to gather
            col = columns[e]
            token = token_ids[col]
            if stored[e] == 0 or token < 0:
                continue
            value = -normalized(stored[e], col, scale, scale32, norms, target_sum, ts32, False, False)
            cast[0] = 0.0 if value == 0 else value  # -0.0 ties with 0.0, as numpy compares
            key = _order_key(bits[0], value != value)
            high[n] = np.uint32(key >> np.uint64(32))
            payload[n] = ((key & np.uint64(0xFFFF_FFFF)) << np.uint64(32)) | np.uint64(token)
            n += 1
        if n <= _SHORT:
            _insertion_sort(high, payload, 0, n)
        else:
            if _radix_sort(high, payload, spare_high, spare_payload, counts, n):
                high, spare_high = spare_high, high
                payload, spare_payload = spare_payload, payload
            _sort_runs(high, payload, n)
        base = starts[row]
        for k in range(min(n, keep)):
            out[base + k] = np.int32(payload[k] & np.uint64(0xFFFF_FFFF))


@numba.njit(cache=True, nogil=True, inline="always")
def _order_key(bits, is_nan):  # type: ignore[no-untyped-def]  # pragma: no cover
    """A float64's bits as an unsigned key in the float's order (NaN last)."""
    if is_nan:
        bits = _NAN_BITS
    return ~bits if bits & _SIGN else bits | _SIGN


@numba.njit(cache=True, nogil=True)
def _radix_sort(high, payload, spare_high, spare_payload, counts, n):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Sort ``high[:n]`` (carrying ``payload``), stably, one byte at a time from the lowest;
    True when the result ended in the spare buffers."""
    counts[:] = 0
    for i in range(n):
        h = high[i]
        counts[0, h & 0xFF] += 1
        counts[1, (h >> 8) & 0xFF] += 1
        counts[2, (h >> 16) & 0xFF] += 1
        counts[3, h >> 24] += 1
    swapped = False
    src_high, src_payload, dst_high, dst_payload = high, payload, spare_high, spare_payload
    for digit in range(4):
        shift = 8 * digit
        count = counts[digit]
        if count[(src_high[0] >> shift) & 0xFF] == n:  # one bucket holds every gene: no move
            continue
        total = 0
        for b in range(256):
            c = count[b]
            count[b] = total
            total += c
        for i in range(n):
            h = src_high[i]
            b = (h >> shift) & 0xFF
            at = count[b]
            count[b] = at + 1
            dst_high[at] = h
            dst_payload[at] = src_payload[i]
        src_high, dst_high = dst_high, src_high
        src_payload, dst_payload = dst_payload, src_payload
        swapped = not swapped
    return swapped


@numba.njit(cache=True, nogil=True)
def _sort_runs(high, payload, n):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Order each run of equal ``high`` by ``payload`` (the key's low half, then the token)."""
    a = 0
    while a < n:
        b = a + 1
        while b < n and high[b] == high[a]:
            b += 1
        if b - a > _SHORT:
            payload[a:b].sort()
        elif b - a > 1:
            _insertion_sort(high, payload, a, b)
        a = b


@numba.njit(cache=True, nogil=True)
def _insertion_sort(high, payload, a, b):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Sort entries ``a:b`` on (high, payload)."""
    for i in range(a + 1, b):
        h, p = high[i], payload[i]
        j = i - 1
        while j >= a and (high[j] > h or (high[j] == h and payload[j] > p)):
            high[j + 1] = high[j]
            payload[j + 1] = payload[j]
            j -= 1
        high[j + 1] = h
        payload[j + 1] = p
