"""Synthetic positives (issue 17): none / classic / cgan keep shapes and dtypes, are deterministic per seed,
their masks are the labels (classic moves image and mask together), and the grid shows real vs synthetic."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import augment, registry
from inference.infill import NAME, new_card
from inference.models.infill_gan import infill_cgan

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"widths": [8, 16], "coarse_widths": [8, 16], "disc_width": 8, "disc_scales": 2}


def view_with_lesion(shape=(200, 170), seed=0):
    """A model-input-like view (air -2 at the right, tissue around 0 on the left) with a bright blob as mass."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1.98, np.float32)
    image[:, : shape[1] * 3 // 4] = rng.normal(0.0, 0.2, (shape[0], shape[1] * 3 // 4))
    mask = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = (yy - 90) ** 2 + (xx - 50) ** 2 <= 12 ** 2
    image[blob] += 1.0
    mask[blob] = 1
    mask[148:151, 80:83] = 2  # a small calcification
    return image, mask


@pytest.fixture
def tiny_infill(models_dir):
    """An untrained, tiny infill cGAN installed in the test's user model folder (the generator's output is
    whatever it is; these tests check the plumbing, not realism)."""
    torch.manual_seed(0)
    registry.save_model(infill_cgan(**TINY), new_card(dict(TINY), "test", {}, {}, version="0.1"), models_dir)
    return f"{NAME}:0.1"


def test_none_is_empty_and_unknown_methods_are_refused():
    out = augment.synthesize("none", [], [], 5, 0)
    assert len(out) == 0 and out.provenance == {"augment": "none", "n_synthetic": 0}
    with pytest.raises(ValueError, match="one of none, classic, cgan"):
        augment.synthesize("mixup", [], [], 1, 0)
    with pytest.raises(ValueError, match="at least one real positive"):
        augment.synthesize("classic", [], [], 1, 0)
    with pytest.raises(ValueError, match="same 2D shape"):
        augment.synthesize("classic", [], [(np.zeros((10, 10)), np.zeros((9, 10)))], 1, 0)


def test_classic_keeps_shape_dtype_and_is_deterministic():
    image, mask = view_with_lesion()
    a = augment.synthesize("classic", [], [(image, mask)], 6, seed=3)
    b = augment.synthesize("classic", [], [(image, mask)], 6, seed=3)
    c = augment.synthesize("classic", [], [(image, mask)], 6, seed=4)
    assert len(a) == 6 and a.sources == [0] * 6 and a.kinds == ["mass"] * 6
    for im, m in zip(a.images, a.masks):
        assert im.shape == image.shape and im.dtype == np.float32 and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 1, 2} and (m == 1).any()
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert not all(np.array_equal(x, y) for x, y in zip(a.images, c.images))


def test_classic_moves_the_lesion_with_its_mask():
    """Flip the positive's mask: the synthetic lesion (bright blob) must follow the mask to the other half."""
    image, mask = view_with_lesion()
    for source_mask, source_image in ((mask, image), (mask[::-1].copy(), image[::-1].copy())):
        out = augment.synthesize("classic", [], [(source_image, source_mask)], 8, seed=1)
        for im, m in zip(out.images, out.masks):
            inside, outside = im[m == 1].mean(), im[(m == 0) & (im > -1.5)].mean()
            assert inside > outside + 0.6  # the bright blob is where the label says
    whole = augment.classic_variant(image, mask, np.random.default_rng(0))
    assert (whole[0][:, :20] > -1.5).mean() > 0.9  # a whole view keeps its chest wall (tissue) on the left


def test_classic_rotates_patches():
    image, mask = view_with_lesion((200, 170))
    patch, pmask = image[70:130, 30:90], mask[70:130, 30:90]  # blob off-centre
    out = augment.synthesize("classic", [], [(patch, pmask)], 16, seed=0)
    centres = {tuple(np.round(np.argwhere(m == 1).mean(0) / 8).astype(int)) for m in out.masks}
    assert len(centres) > 1  # mirrored / rotated copies put the off-centre blob in several places


def test_cgan_infills_inside_the_breast_and_its_masks_are_the_labels(tiny_infill):
    normals = [view_with_lesion(seed=s)[0] for s in range(3)]
    normals = [np.where(n > 0.6, 0.0, n).astype(np.float32) for n in normals]  # drop the blob: normals
    _image, mask = view_with_lesion()
    a = augment.synthesize("cgan", normals, [(_image, mask)], 5, seed=7, infill_model=tiny_infill)
    b = augment.synthesize("cgan", normals, [(_image, mask)], 5, seed=7, infill_model=tiny_infill)
    assert len(a) == 5 and a.provenance["augment"] == "cgan" and a.provenance["infill_model"] == f"{NAME} 0.1"
    assert a.provenance["infill_training"] == "test"
    for im, m, kind, src, im_b in zip(a.images, a.masks, a.kinds, a.sources, b.images):
        normal = normals[src]
        assert im.shape == normal.shape and im.dtype == np.float32 and m.dtype == np.uint8
        assert (m == {"mass": 1, "calcification": 2}[kind]).any() and set(np.unique(m)) <= {0, 1, 2}
        changed = im != normal
        assert changed.any() and np.array_equal(im, im_b)
        rows, cols = np.nonzero(changed)
        assert cols.max() < normal.shape[1] * 3 // 4  # only inside the breast (tissue on the left)
        grown = np.zeros_like(changed)
        lesion = np.argwhere(m > 0)
        lo, hi = lesion.min(0) - 12, lesion.max(0) + 12
        grown[max(lo[0], 0):hi[0], max(lo[1], 0):hi[1]] = True
        assert not (changed & ~grown).any()  # pixels outside the infill region are untouched
    c = augment.synthesize("cgan", normals, [(_image, mask)], 5, seed=8, infill_model=tiny_infill)
    assert not all(np.array_equal(x, y) for x, y in zip(a.images, c.images))


def test_cgan_handles_patches_smaller_than_the_generator(tiny_infill):
    rng = np.random.default_rng(0)
    patches = [rng.normal(0, 0.2, (52, 52)).astype(np.float32) for _ in range(4)]
    out = augment.synthesize("cgan", patches, [], 6, seed=0, infill_model=tiny_infill)
    assert len(out) == 6 and {i.shape for i in out.images} == {(52, 52)}
    assert set(out.kinds) <= {"mass", "calcification"} and all((m > 0).any() for m in out.masks)
    assert out.provenance["lesion_shapes"].startswith("phantom")


def test_cgan_reports_progress_and_cancels(tiny_infill):
    from inference.finetune_common import Stopped

    normals = [np.zeros((60, 60), np.float32)] * 2
    seen = []
    augment.synthesize("cgan", normals, [], 3, 0, infill_model=tiny_infill, progress=seen.append)
    assert seen[-1] == {"stage": "augment", "done": 3, "total": 3}
    with pytest.raises(Stopped):
        augment.synthesize("cgan", normals, [], 3, 0, infill_model=tiny_infill, should_stop=lambda: True)


def test_grid_image_and_png(tmp_path):
    image, mask = view_with_lesion()
    synthetic = augment.synthesize("classic", [], [(image, mask)], 5, seed=0)
    grid = augment.grid_image([(image, mask)] * 3, synthetic, n=4, crop=64)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] == 2 * 128 + 3 * 6  # two rows of 128 px tiles (64 px crops, zoomed x2)
    path = augment.save_grid([(image, mask)], synthetic, tmp_path / "grid.png", n=4)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
