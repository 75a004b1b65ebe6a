"""Parity figures and the fp32 gate."""

from __future__ import annotations

import numpy as np
import pytest

from offline.export.errors import ExportError
from offline.export.parity import FP32_MIN_COSINE, compare, enforce_fp32


def test_identical_outputs_have_cosine_one_and_no_difference() -> None:
    a = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    p = compare("fp32", a, a.copy(), "4 rows")
    assert p.max_abs_diff == 0.0
    assert p.min_cosine == pytest.approx(1.0)
    assert p.n_inputs == 4
    enforce_fp32(p, "m")


def test_min_cosine_is_the_worst_row() -> None:
    ref = np.eye(3, dtype=np.float32)
    cand = ref.copy()
    cand[1] = [0.0, 1.0, 1.0]  # 45 degrees off
    p = compare("int8", ref, cand, "3 rows")
    assert p.min_cosine == pytest.approx(np.cos(np.pi / 4))
    assert p.max_abs_diff == pytest.approx(1.0)


def test_fp32_gate_refuses_a_drifting_graph() -> None:
    ref = np.ones((2, 4), dtype=np.float32)
    cand = ref + np.array([[0, 0, 0, 0], [0.1, 0, 0, 0]], dtype=np.float32)
    p = compare("fp32", ref, cand, "2 rows")
    assert p.min_cosine < FP32_MIN_COSINE
    with pytest.raises(ExportError, match=r"min cosine .* < 0.99999.*nothing was published"):
        enforce_fp32(p, "m")


def test_fp32_gate_refuses_nan() -> None:
    ref = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(ExportError, match="parity check"):
        enforce_fp32(compare("fp32", ref, np.full_like(ref, np.nan), "1 row"), "m")


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ExportError, match="shape"):
        compare("fp32", np.ones((2, 4), np.float32), np.ones((2, 3), np.float32), "x")
