"""The GPU path run on the CPU (issue 15): sampling, labels and slabs kept on the model's device give the
same outputs as the host path they replace, and a GPU out of memory halves the window batch first."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import device as devmod
from inference.preprocess import _sample_bilinear_torch, sample_bilinear
from inference.preprocess import ct as ctp
from inference.preprocess import mammo as mgp
from inference.segment import labels_over_background, segment_image, segment_volume, sliding_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _oom(message="CUDA out of memory. Tried to allocate 2.00 GiB"):
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return oom(message) if oom is not None else RuntimeError(message)


# --------------------------------------------------------------------------
# sampling back to the source grid
# --------------------------------------------------------------------------
@pytest.mark.parametrize("small", [(3, 37, 29), (2, 150, 140)])  # matmul and gather paths of the numpy side
def test_torch_sampler_matches_numpy(small):
    rng = np.random.default_rng(1)
    values = rng.random(small, dtype=np.float32)
    rows = np.linspace(-3.0, small[1] + 2.0, 211)
    cols = np.linspace(-1.5, small[2] + 4.0, 173)
    row_valid = (rows > 0) & (rows < small[1] - 4)
    col_valid = cols < small[2] - 1
    for fill in (0.0, -2.5):
        want = sample_bilinear(values, rows, cols, row_valid, col_valid, fill)
        got = _sample_bilinear_torch(torch.from_numpy(values), rows, cols, row_valid, col_valid, fill)
        assert got.shape == want.shape and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


@pytest.mark.parametrize("small", [(2, 37, 29), (2, 150, 140)])
@pytest.mark.parametrize("masks", ["crop", "scattered", "none-valid", "no-masks"])
def test_only_the_valid_rectangle_is_interpolated_and_the_rest_filled(small, masks):
    """The numpy sampler interpolates only inside a crop's rows/columns; what it gives must equal
    interpolating everything and then filling the invalid rows and columns."""
    rng = np.random.default_rng(4)
    values = rng.random(small, dtype=np.float32)
    rows = np.linspace(-3.0, small[1] + 2.0, 301)
    cols = np.linspace(-1.5, small[2] + 4.0, 257)
    row_valid = {"crop": (rows > 2) & (rows < small[1] - 4), "scattered": rng.random(301) > 0.3,
                 "none-valid": np.zeros(301, bool), "no-masks": None}[masks]
    col_valid = {"crop": cols < small[2] - 1, "scattered": (cols < 5) | (cols > 9),
                 "none-valid": np.ones(257, bool), "no-masks": None}[masks]
    for fill in (0.0, -2.5):
        want = sample_bilinear(values, rows, cols)
        if row_valid is not None:
            want[:, ~row_valid, :] = fill
        if col_valid is not None:
            want[:, :, ~col_valid] = fill
        got = sample_bilinear(values, rows, cols, row_valid, col_valid, fill)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_to_source_keeps_a_tensor_a_tensor_with_the_same_values():
    img = np.full((600, 480), 500, np.float32)
    img[100:500, :300] = 2500.0
    prep = mgp.prepare(img, (0.1, 0.1), "R", "CC")
    probe = np.random.default_rng(0).random((2, *prep.image.shape), dtype=np.float32)
    want = mgp.to_source(probe, prep.geometry, fill=0.0)
    got = mgp.to_source(torch.from_numpy(probe), prep.geometry, fill=0.0)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "uint16", "int16", "uint8", "bool", "float64"])
def test_the_full_field_image_resampled_where_it_was_uploaded_is_the_hosts(dtype, monkeypatch):
    """prepare(device=<GPU>) uploads the image in its own dtype and averages it there; run here on the
    CPU through the same code, it must give the host path's model input."""
    rng = np.random.default_rng(2)
    image = (rng.random((1333, 1001)) * (1 if dtype == "bool" else 4000)).astype(dtype)
    if dtype == "bool":
        image = rng.random((1333, 1001)) > 0.5
    want = mgp.resample(image, (190, 143))
    got = mgp._resample_uploaded(image, (190, 143), "cpu")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(mgp._resample_uploaded(image, image.shape, "cpu"), mgp.resample(image, image.shape))
    seen = []
    monkeypatch.setattr(mgp, "_resample_uploaded", lambda a, shape, device: seen.append(device) or mgp.resample(a, shape))
    prep = mgp.prepare(image.astype(np.float32), (0.1, 0.1), "R", "CC", device="cuda")  # a GPU's: asked for
    assert seen == ["cuda"] and prep.image.ndim == 2
    assert mgp.prepare(image.astype(np.float32), (0.1, 0.1), "R", "CC", device="cpu") is not None and seen == ["cuda"]


# --------------------------------------------------------------------------
# labels from foreground probabilities
# --------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [1, 3])
def test_labels_over_background_is_argmax_with_first_maximum_winning(classes):
    rng = np.random.default_rng(classes)
    raw = rng.random((classes + 1, 64, 48)).astype(np.float32)
    raw[:, :4] = 1.0  # ties everywhere in the first rows: the first class must win, as argmax does
    p = raw / raw.sum(0, keepdims=True)
    fg = p[1:]
    want = np.concatenate([(1.0 - fg.sum(0))[None], fg]).argmax(0)
    labels, lesion = labels_over_background(torch.from_numpy(fg))
    assert labels.dtype == torch.uint8
    assert (labels.numpy() == want).mean() > 0.999  # float sums may break an exact tie either way
    np.testing.assert_allclose(lesion.numpy(), fg.sum(0), atol=1e-6)
    assert (labels.numpy()[4:] == want[4:]).all()


def test_binary_labels_at_one_half_are_the_argmax_of_background_and_lesion():
    """A binary model's labels come from p > 0.5; around one half, where 1 - p rounds, they must still be
    argmax([1 - p, p]) with background winning a tie."""
    half = np.float32(0.5)
    near = [half]
    for direction in (0.0, 1.0):
        x = half
        for _ in range(64):
            x = np.nextafter(x, np.float32(direction))
            near.append(x)
    p = torch.tensor(np.array(near + [0.0, 1.0, 0.25, 0.75], np.float32))[None, :, None]
    want = torch.stack([1.0 - p[0], p[0]]).argmax(0)
    labels, lesion = labels_over_background(p)
    assert torch.equal(labels.long(), want) and torch.equal(lesion, p[0])


def _segment_image_on_the_host(model, card, image, spacing, chest_wall):
    """What segment_image did before its post-processing moved onto the model's device."""
    from inference.models.unet import divisor
    from inference.segment import _fit_roi

    prep = mgp.prepare(image, spacing, "L", "CC", chest_wall=chest_wall, target_spacing=card.input["spacing_mm"][0],
                       normalization=card.normalization or None)
    background = prep.image[~prep.breast]
    x = torch.from_numpy(prep.image)[None, None]
    roi = _fit_roi(card.input["patch_size"], x.shape[2:], divisor(card))
    logits = sliding_window(model, x, roi, overlap=card.input["overlap"], pad_value=float(np.median(background)))
    probs = torch.softmax(logits[0], dim=0).numpy()
    fg = mgp.to_source(probs[1:], prep.geometry, fill=0.0)
    return np.concatenate([(1.0 - fg.sum(0))[None], fg]).argmax(0).astype(np.uint8), fg.sum(0)


def test_segment_image_gives_todays_labels_and_probability():
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.registry import find_model, load_model

    model, card = load_model(find_model("mammo-lesion-unet2d"), device="cpu")
    size = (1040, 800)
    image, masks = mammo_image("L", "CC", size=size, seed=5, mass=True)
    spacing = mammo_spacing(size)
    want_labels, want_prob = _segment_image_on_the_host(model, card, image, spacing, "left")
    labels, prob = segment_image(model, card, image, spacing, "L", "CC", device="cpu", chest_wall="left")
    assert labels.dtype == np.uint8 and prob.dtype == np.float32 and labels.shape == image.shape
    assert want_labels.any() and (labels[masks["mass"] > 0] > 0).mean() > 0.5  # a real lesion, found
    np.testing.assert_allclose(prob, want_prob, atol=1e-5)
    assert (labels != want_labels).sum() <= max(2, int(1e-5 * labels.size))


# --------------------------------------------------------------------------
# CT: the whole volume in one slab (as a GPU runs it) equals the CPU's 16-slice slabs
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct_case():
    from inference.phantoms import ct_phantom
    from inference.registry import find_model, load_model

    net, card = load_model(find_model("ct-organs-unet3d"), device="cpu")
    vol = ct_phantom(shape=(60, 96, 96), spacing=(2.5, 2.0, 2.0), seed=3)[0]
    return net, card, vol, (2.5, 2.0, 2.0)


def test_slab_size_is_the_cpu_default_without_a_gpu_and_grows_with_gpu_memory(monkeypatch):
    assert ctp.slab_chunk("cpu", 10_000_000) == 16
    vol = np.zeros((4, 5, 6), np.int16)
    assert ctp.on_device(vol, "cpu") is vol  # a CPU run converts slab by slab, never the whole volume
    monkeypatch.setattr(ctp, "free_bytes", lambda device: 8 << 30)
    assert ctp.slab_chunk("cuda", 4 * 512 * 512 * 12) == (8 << 30) // 4 // (4 * 512 * 512 * 12)
    moved = ctp.on_device(vol, "cpu")
    assert isinstance(moved, torch.Tensor) and moved.dtype == torch.int16  # its own dtype, not float32
    monkeypatch.setattr(ctp, "free_bytes", lambda device: 100)
    assert ctp.slab_chunk("cuda", 10_000) == 16
    assert ctp.on_device(vol, "cpu") is vol  # too big for a quarter of what is free: stays where it is


def test_whole_volume_slab_equals_the_sliced_path(ct_case, monkeypatch):
    net, card, vol, spacing = ct_case
    want, want_p = segment_volume(net, card, vol, spacing, "cpu", probabilities="full", chunk=16)
    monkeypatch.setattr(ctp, "free_bytes", lambda device: 64 << 30)  # as on a large GPU: one slab
    got, got_p = segment_volume(net, card, vol, spacing, "cpu", probabilities="full")
    assert (got == want).mean() >= 0.9999
    np.testing.assert_allclose(got_p, want_p, atol=1e-4)


# --------------------------------------------------------------------------
# out of memory: fewer windows at a time before the CPU
# --------------------------------------------------------------------------
def test_halving_batch_halves_on_oom_only_down_to_one():
    seen, told = [], []

    def fn(batch):
        seen.append(batch)
        if batch > 1:
            raise _oom()
        return "done"

    assert devmod.halving_batch(fn, 8, "cpu", told.append) == "done"
    assert seen == [8, 4, 2, 1] and len(told) == 3 and "1 window" in told[-1]

    def always(batch):
        raise _oom()

    with pytest.raises(Exception, match="out of memory"):  # the caller's CPU fallback takes it from here
        devmod.halving_batch(always, 4, "cpu", told.append)

    calls = []

    def other(batch):
        calls.append(batch)
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        devmod.halving_batch(other, 4, "cpu")
    assert calls == [4]  # any other error is not retried


class _OomAboveOne(torch.nn.Module):
    """Wraps a network and runs out of 'GPU memory' for more than one window at a time."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        if x.shape[0] > 1:
            raise _oom()
        return self.net(x)


def test_segment_volume_retries_with_smaller_batches_and_gives_the_same_labels(ct_case):
    net, card, vol, spacing = ct_case
    want, _ = segment_volume(net, card, vol, spacing, "cpu", probabilities="none", sw_batch_size=4)
    flaky, told = _OomAboveOne(net), []
    got, _ = segment_volume(flaky, card, vol, spacing, "cpu", probabilities="none", sw_batch_size=4,
                            notify=told.append)
    # 4 windows asked; the first batch holds min(4, windows) and is halved until one window fits
    assert flaky.batches[0] > 1 and flaky.batches == sorted(flaky.batches, reverse=True)
    assert flaky.batches[-1] == 1 and len(told) == 2  # sw_batch_size 4 -> 2 -> 1
    assert (got == want).all()


# --------------------------------------------------------------------------
# the exam: one preparation per view, density beside the models on a GPU
# --------------------------------------------------------------------------
def test_segment_image_reuses_the_classifiers_preparation_only_when_it_is_the_same():
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.registry import find_model, load_model

    model, card = load_model(find_model("mammo-lesion-unet2d"), device="cpu")
    size = (832, 640)
    image = mammo_image("R", "MLO", size=size, seed=2, mass=True)[0]
    spacing = mammo_spacing(size)
    own = segment_image(model, card, image, spacing, "R", "MLO", device="cpu")
    same = mgp.prepare(image, spacing, "R", "MLO", target_spacing=0.42, margin=26,
                       normalization={"kind": "linear", "offset": 2000.0, "scale": 1000.0})
    assert same.fits(image.shape, spacing, 0.42, 26, card.normalization)
    reused = segment_image(model, card, image, spacing, "R", "MLO", device="cpu", prepared=same)
    assert (reused[0] == own[0]).all() and np.array_equal(reused[1], own[1])
    other = mgp.prepare(image, spacing, "R", "MLO", target_spacing=0.84)  # another grid: must not be used
    assert not other.fits(image.shape, spacing, 0.42, 26, card.normalization)
    ignored = segment_image(model, card, image, spacing, "R", "MLO", device="cpu", prepared=other)
    assert (ignored[0] == own[0]).all() and np.array_equal(ignored[1], own[1])


def test_density_beside_the_models_gives_the_loops_numbers():
    from inference.phantoms import mammo_image, mammo_spacing
    from viewer.analysis.run import _DensityBeside, density_entry

    size = (832, 640)
    views = {n: mammo_image(n[0], n[1:], size=size, seed=i)[0] for i, n in enumerate(("RCC", "LMLO"))}
    want = {n: density_entry(im, mammo_spacing(size), n, None) for n, im in views.items()}
    for device in ("cpu", "cuda"):  # "cuda": host threads (no GPU is touched)
        with _DensityBeside(device) as beside:
            assert (beside.pool is None) == (device == "cpu")
            for n, im in views.items():
                beside.start(n, im, mammo_spacing(size), n, None)
            got = {n: beside.result(n) for n in views}
        for n in views:
            assert {k: v for k, v in got[n].items() if k != "seconds"} == \
                   {k: v for k, v in want[n].items() if k != "seconds"}
