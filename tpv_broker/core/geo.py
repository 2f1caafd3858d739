"""Great-circle distance, for data locality."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

EARTH_RADIUS_KM = 6371.0088

Coordinate = TypeVar("Coordinate", float, np.ndarray)


def great_circle_km(lat1: Coordinate, lon1: Coordinate, lat2: float, lon2: float) -> Coordinate:
    """Haversine distance in km (mean Earth radius), from each (lat1, lon1)
    (floats, or arrays of them: NaN in, NaN out) to (lat2, lon2)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return km if isinstance(km, np.ndarray) else float(km)  # type: ignore[return-value]
