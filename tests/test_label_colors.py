"""Label colours (viewer.core.colors) stay distinguishable for colour-blind readers and on grey images
(issue 14: a faint beige lesion label on CT). Dichromacy simulated with Machado, Oliveira & Fernandes
(2009, IEEE TVCG 15(6)) severity-1.0 matrices in linear sRGB; differences are CIE76 ΔE*ab."""
import numpy as np
import pytest

from viewer.core.colors import DEFAULT_LABEL_COLORS, label_color

SIMULATIONS = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}
MID_GREY = (128, 128, 128)


def _linear(rgb):
    c = np.asarray(rgb, float) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb):
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ np.clip(linear_rgb, 0, 1)
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])  # D65 white
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a, b, vision="normal") -> float:
    m = SIMULATIONS[vision]
    return float(np.linalg.norm(_lab(m @ _linear(a)) - _lab(m @ _linear(b))))


def test_the_simulation_confuses_what_dichromats_confuse():
    """The check must be able to fail: pure red and green collapse for a deuteranope, not for normal vision."""
    red, green = (220, 50, 30), (80, 160, 40)
    assert delta_e(red, green) > 60
    assert delta_e(red, green, "deuteranopia") < delta_e(red, green) / 3


@pytest.mark.parametrize("vision", list(SIMULATIONS))
def test_neighbouring_labels_differ(vision):
    n = len(DEFAULT_LABEL_COLORS)
    for label in range(1, n + 1):  # the last one and label 1 (where the table cycles) too
        a, b = label_color(label), label_color(label + 1)
        assert delta_e(a, b, vision) >= 60, (vision, label, a, b)


@pytest.mark.parametrize("vision", list(SIMULATIONS))
def test_every_label_stands_out_on_mid_grey(vision):
    for label in range(1, len(DEFAULT_LABEL_COLORS) + 1):
        assert delta_e(label_color(label), MID_GREY, vision) >= 30, (vision, label, label_color(label))


def test_no_pale_or_duplicate_colours():
    old_beige = (255, 239, 213)
    assert old_beige not in DEFAULT_LABEL_COLORS
    assert len(set(DEFAULT_LABEL_COLORS)) == len(DEFAULT_LABEL_COLORS)
    for c in DEFAULT_LABEL_COLORS:  # some saturation: max - min channel
        assert max(c) - min(c) >= 100, c
    assert label_color(1) == label_color(1 + len(DEFAULT_LABEL_COLORS))
