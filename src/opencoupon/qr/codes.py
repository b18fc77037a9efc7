"""Making a QR code: one recipe for the QR routes, the loyalty card page and coupon emails."""

from __future__ import annotations

import segno

# Scoring the eight masks is three quarters of segno's time for a code (about 3 of 4 ms, in
# Python, on every coupon page view); every mask is valid and scanners read them all.
MASK = 2


def make(data: str) -> segno.QRCode:
    """A regular (never micro) QR code of `data`, error correction M."""
    return segno.make(data, error="m", micro=False, mask=MASK)
