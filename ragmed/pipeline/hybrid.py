"""Hybrid retrieval pieces, kept under their old import path: the BM25 channel (:mod:`ragmed.index.bm25`) and the
per-domain score calibration (:mod:`ragmed.index.calibrate`), both built with the index."""
from __future__ import annotations

from ragmed.index.bm25 import BM25Channel
from ragmed.index.calibrate import QUANTILES, SAMPLE, Calibrator, calibrate, calibrate_channels, first_sentence

__all__ = ["BM25Channel", "Calibrator", "calibrate", "calibrate_channels", "first_sentence", "QUANTILES", "SAMPLE"]
