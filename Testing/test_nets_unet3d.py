"""The REMIx residual 3D U-Net: shapes, identity at initialisation, size checks."""

from __future__ import annotations

import pytest
import torch

from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig, count_parameters


@pytest.mark.parametrize("levels,shape", [(1, (2, 1, 5, 6, 7)), (3, (2, 1, 8, 12, 16)), (4, (1, 1, 16, 8, 24))])
def test_output_shape_equals_input_shape(levels, shape) -> None:
    net = ResidualUNet3D(UNet3DConfig(width=4, levels=levels))
    assert net(torch.rand(shape)).shape == shape


def test_untrained_network_is_the_identity_and_trains_away_from_it() -> None:
    torch.manual_seed(0)
    net = ResidualUNet3D(UNet3DConfig(width=4, levels=2))
    x = torch.rand(2, 1, 8, 8, 8)
    assert torch.equal(net(x), x)  # zero-initialised output conv: output = input
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = ((net(x) - 2 * x) ** 2).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(net(x), x)


def test_parameter_count_of_the_compact_width() -> None:
    # width 8, 3 levels, 2 convs: convs 1->8->8, 8->16->16, 16->32->32; up 32->16, 16->8 (k=2);
    # merges 32->16->16, 16->8->8; output 8->1
    def conv(i, o, k=3):
        return i * o * k ** 3 + o

    expected = (conv(1, 8) + conv(8, 8) + conv(8, 16) + conv(16, 16) + conv(16, 32) + conv(32, 32)
                + conv(32, 16, 2) + conv(16, 8, 2) + conv(32, 16) + conv(16, 16) + conv(16, 8) + conv(8, 8)
                + conv(8, 1, 1))
    assert count_parameters(ResidualUNet3D(UNet3DConfig(width=8))) == expected == 85017


@pytest.mark.parametrize("shape", [(1, 1, 6, 8, 8), (1, 2, 8, 8, 8), (1, 8, 8, 8)])
def test_bad_shapes_are_refused(shape) -> None:
    net = ResidualUNet3D(UNet3DConfig(width=2, levels=3))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(shape))


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"levels": 0}, {"norm": "group"}])
def test_bad_configs_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        UNet3DConfig(**kwargs)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_normalisation_layers(norm) -> None:
    net = ResidualUNet3D(UNet3DConfig(width=4, levels=2, norm=norm))
    assert any(type(m).__name__.lower().startswith(norm) for m in net.modules())
    assert net(torch.rand(2, 1, 8, 8, 8)).shape == (2, 1, 8, 8, 8)
