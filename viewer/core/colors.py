"""Default label colours, shared by the viewer's overlays and the DICOM SEG / NIfTI writers.

Colour-blind safe on grey images (issue 14: the old ITK-SNAP-like table gave a faint beige, (255, 239, 213),
that vanished on CT). The first seven are from the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal
Design", https://jfly.uni-koeln.de/color/) without its black, the last two from Paul Tol's palettes
(muted indigo, bright green, light cyan; SRON/EPS/TN/09-002, https://personal.sron.nl/~pault/). The
order puts colours that dichromats still tell apart next to each other, since labels 1, 2, 3 usually
touch: under Machado et al. (2009) protanopia and deuteranopia simulation, neighbours differ by at least
ΔE*ab 68 and every colour by at least 30 from mid-grey (tests/test_label_colors.py). Okabe–Ito's bluish
green and reddish purple were left out: to a deuteranope they are almost mid-grey.
"""
from __future__ import annotations

DEFAULT_LABEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (213, 94, 0),     # Okabe–Ito vermillion
    (86, 180, 233),   # Okabe–Ito sky blue
    (240, 228, 66),   # Okabe–Ito yellow
    (0, 114, 178),    # Okabe–Ito blue
    (230, 159, 0),    # Okabe–Ito orange
    (51, 34, 136),    # Tol muted indigo
    (34, 136, 51),    # Tol bright green
    (153, 221, 255),  # Tol light cyan
)


def label_color(label: int) -> tuple[int, int, int]:
    """Colour of label ``label`` (>= 1), cycling after the table's end."""
    return DEFAULT_LABEL_COLORS[(int(label) - 1) % len(DEFAULT_LABEL_COLORS)]
