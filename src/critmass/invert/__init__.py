"""Partial inversion (the paper's ``partial_inversion.py``): synthesise an image whose representation matches a
target's on a subset of a layer's neurons only, and measure what the rest of the layer then does."""

from ._forward import ImageForward, InputSpec, input_spec
from ._loss import FakeReLU, fake_relu, partial_loss, regularised_alpha, relative_error
from ._masks import NOISE_SELECTORS, check_selector, select_neurons, subset_size
from ._optimize import DEFAULT_STEP_SIZES, OPTIMIZERS, Optimised, optimise
from ._plots import plot_grid, plot_rest_error
from ._run import COLUMNS, METRICS, Inversion, invert, load_images, write_inversion

__all__ = ["invert", "write_inversion", "load_images", "Inversion", "COLUMNS", "METRICS", "partial_loss",
           "relative_error", "regularised_alpha", "FakeReLU", "fake_relu", "ImageForward", "InputSpec", "input_spec",
           "select_neurons", "check_selector", "subset_size", "NOISE_SELECTORS", "optimise", "Optimised",
           "OPTIMIZERS", "DEFAULT_STEP_SIZES", "plot_grid", "plot_rest_error"]
