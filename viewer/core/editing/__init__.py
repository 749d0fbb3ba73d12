"""Segment-editor effects on a LabelMap (no Qt): one module per kind of effect.

Every effect writes through ``LabelMap.edit`` — one undo step per call (or per
mouse drag with ``brush.Stroke``), locked labels untouched, subscribers told
the changed box. Plane effects take a ``core.mpr.PlaneGeometry`` and plane
pixels (see ``plane``); volume effects work on the whole label map.

    brush        paint / erase dabs and strokes (disc or sphere, threshold-limited)
    fill         flood fill with an intensity tolerance, 2D or 3D
    polygon      polygon / lasso fill on a plane
    islands      remove small islands, keep the largest
    morphology   opening / closing with a radius in mm
    interpolate  fill between slices (signed-distance interpolation)
    plane        plane pixel <-> array index, scene mm -> plane pixel
    change       a planned edit: heavy effects' ``plan_*`` compute it (worker-safe), ``apply`` writes it

Each volume effect ``f`` is ``plan_f(...).apply(labelmap)``; the UI runs ``plan_f`` off the UI thread.
"""
from .brush import (
    Stroke,
    brush_footprint,
    disc_offsets,
    footprint,
    paint,
    sphere_offsets,
    stroke,
)
from .change import Change, Write
from .fill import flood_fill, flood_region, plan_flood_fill
from .interpolate import fill_between_slices, plan_fill_between_slices
from .islands import (
    keep_largest_island,
    plan_keep_largest_island,
    plan_remove_small_islands,
    remove_small_islands,
)
from .morphology import closing, opening, plan_smooth, smooth
from .plane import index_to_pixel, pixel_to_index, scene_to_pixel
from .polygon import fill_polygon, polygon_mask

__all__ = ["Change", "Stroke", "Write", "brush_footprint", "closing", "disc_offsets", "fill_between_slices",
           "fill_polygon", "flood_fill", "flood_region", "footprint", "index_to_pixel", "keep_largest_island",
           "opening", "paint", "pixel_to_index", "plan_fill_between_slices", "plan_flood_fill",
           "plan_keep_largest_island", "plan_remove_small_islands", "plan_smooth", "polygon_mask",
           "remove_small_islands", "scene_to_pixel", "smooth", "sphere_offsets", "stroke"]
