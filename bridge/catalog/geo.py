"""Rough bounding boxes of the countries where Hubject's CPOs mostly operate.

Only for plausibility checks of the data-quality report (coordinates in their country, or
swapped): a box is a little larger than the country (islands and overseas parts included where
they are near), so a point outside is certainly wrong while a point inside proves nothing.
A country without a box here is simply not checked.
"""

from __future__ import annotations

#: alpha-3 → (south, north, west, east) in decimal degrees.
BOXES: dict[str, tuple[float, float, float, float]] = {
    "AUT": (46.3, 49.1, 9.5, 17.2),
    "BEL": (49.4, 51.6, 2.5, 6.5),
    "CHE": (45.8, 47.9, 5.9, 10.6),
    "CZE": (48.5, 51.1, 12.0, 18.9),
    "DEU": (47.2, 55.1, 5.8, 15.1),
    "DNK": (54.5, 57.8, 8.0, 15.2),
    "ESP": (27.6, 43.8, -18.2, 4.4),
    "FIN": (59.7, 70.1, 20.5, 31.6),
    "FRA": (41.3, 51.1, -5.2, 9.6),
    "GBR": (49.8, 60.9, -8.7, 1.8),
    "HRV": (42.3, 46.6, 13.4, 19.5),
    "HUN": (45.7, 48.6, 16.1, 22.9),
    "IRL": (51.4, 55.4, -10.5, -5.9),
    "ITA": (35.4, 47.1, 6.6, 18.6),
    "LUX": (49.4, 50.2, 5.7, 6.6),
    "NLD": (50.7, 53.6, 3.3, 7.3),
    "NOR": (57.9, 71.2, 4.5, 31.2),
    "POL": (49.0, 54.9, 14.1, 24.2),
    "PRT": (32.6, 42.2, -31.3, -6.2),
    "SVK": (47.7, 49.7, 16.8, 22.6),
    "SVN": (45.4, 46.9, 13.4, 16.6),
    "SWE": (55.3, 69.1, 10.9, 24.2),
}
_MARGIN = 0.3  # degrees: a station at a border is still inside


def in_country(country: str, latitude: float, longitude: float) -> bool | None:
    """Whether the point lies in the country's box; None when the country has no box."""
    box = BOXES.get(country)
    if box is None:
        return None
    south, north, west, east = box
    return (
        south - _MARGIN <= latitude <= north + _MARGIN
        and west - _MARGIN <= longitude <= east + _MARGIN
    )
