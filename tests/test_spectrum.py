"""Spectrum decomposition, amplitude mix-up and the amplitude generator, on real images."""

import pytest
import torch

from phaseguard.data import load_dataset
from phaseguard.generator import AmplitudeGenerator
from phaseguard.spectrum import decompose, mix_amplitude, recompose


@pytest.fixture(scope="module")
def images():
    ds = load_dataset("fashion-mnist")
    gray = ds.x_test[:32].float() / 255  # [32,1,28,28] real images
    colour = torch.cat([gray, gray.flip(-1), gray.flip(-2)], dim=1)  # [32,3,28,28]
    return gray, colour


def test_round_trip_returns_the_image(images):
    for x in images:
        amplitude, phase = decompose(x)
        assert amplitude.shape == phase.shape == x.shape
        assert amplitude.dtype == torch.float32
        torch.testing.assert_close(recompose(amplitude, phase), x, atol=1e-5, rtol=0)


def test_amplitude_is_raw_and_shifted_phase_is_not(images):
    x = images[0]
    amplitude, phase = decompose(x)
    h, w = x.shape[-2:]
    # the DC term (sum of the pixels) sits at the centre after fftshift
    torch.testing.assert_close(amplitude[..., h // 2, w // 2], x.sum((-2, -1)))
    assert amplitude[..., h // 2, w // 2].max() > 50  # raw magnitude, not normalised
    torch.testing.assert_close(phase, torch.fft.fft2(x).angle())


def test_bf16_input_is_transformed_in_float32(images):
    x = images[1]
    amplitude, phase = decompose(x.bfloat16())
    assert amplitude.dtype == phase.dtype == torch.float32
    assert recompose(amplitude.bfloat16(), phase).dtype == torch.float32


def test_mix_endpoints(images):
    x = images[1]
    amplitude, phase = decompose(x)
    other = torch.rand_like(amplitude)
    lam = torch.zeros(len(x))
    torch.testing.assert_close(
        recompose(mix_amplitude(amplitude, other, lam), phase), x, atol=1e-5, rtol=0
    )
    assert torch.equal(mix_amplitude(amplitude, other, torch.ones(len(x))), other)
    lam = torch.rand(len(x))
    mixed = mix_amplitude(amplitude, other, lam)
    expected = lam[:, None, None, None] * other + (1 - lam[:, None, None, None]) * amplitude
    torch.testing.assert_close(mixed, expected)


def test_lam_one_keeps_the_phase_and_takes_the_other_amplitude(images):
    x = images[1]
    amplitude, phase = decompose(x)
    other, _ = decompose(images[1].roll(1, 0))  # another real image's amplitude
    out = recompose(mix_amplitude(amplitude, other, torch.ones(len(x))), phase)
    unclamped = torch.fft.ifft2(torch.polar(torch.fft.ifftshift(other, dim=(-2, -1)), phase)).real
    torch.testing.assert_close(out, unclamped.clamp(0, 1))
    assert not torch.allclose(out, x, atol=1e-2)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_generator_shapes_range_and_layers(shape):
    g = AmplitudeGenerator(10, shape)
    out = g(torch.randn(8, 100), torch.randn(8, 10))
    assert out.shape == (8, *shape)
    assert out.min() > 0 and out.max() < 1
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [b.num_features for b in bns] == [256, 512, 1024]
    assert all(b.eps == 0.8 for b in bns)
    linears = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 110 and linears[-1].out_features == torch.Size(shape).numel()
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    g.eval()
    assert g.training and all(m.training for m in g.modules())  # batch statistics, always
