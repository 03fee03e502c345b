import pytest
import torch
import torch.nn.functional as F

from unet_sep.config import ConfigError, ModelConfig, UNetConfig
from unet_sep.model import StemsNet, UNet
from unet_sep.model.unet import same_padding


@pytest.mark.parametrize("frames,bins", [(512, 1024), (37, 101), (1, 1), (63, 65), (128, 1536), (5, 2049)])
def test_unet_output_shape_matches_input_for_any_size(frames, bins):
    net = UNet(UNetConfig(filters=[2, 4, 8, 16, 32, 64]), n_channels=2).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 2, frames, bins))
    assert out.shape == (3, 2, frames, bins)
    assert torch.isfinite(out).all()


def test_stems_net_masks_and_estimates():
    config = ModelConfig(stems=["vocals", "drums", "bass", "other"], unet=UNetConfig(filters=[2, 4, 8]),
                         frequency_bins=64, segment_frames=64, mask_activation="softmax")
    net = StemsNet(config).eval()
    magnitude = torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        masks = net.soft_masks(magnitude)
        estimates = net(magnitude)
    assert masks.shape == (4, 2, 2, 64, 64)
    assert torch.allclose(masks.sum(0), torch.ones(2, 2, 64, 64), atol=1e-6)
    assert torch.allclose(estimates, masks * magnitude)


def test_same_padding_matches_tensorflow_rule():
    assert same_padding(512, 5, 2) == (1, 2)  # even sizes: 1 before, 2 after (not PyTorch's symmetric 2)
    assert same_padding(1024, 5, 2) == (1, 2)
    assert same_padding(37, 5, 2) == (2, 2)
    # The encoder conv is a valid conv after that padding.
    conv = torch.nn.Conv2d(1, 1, 5, stride=2)
    x = torch.randn(1, 1, 16, 16)
    from unet_sep.model.unet import EncoderBlock

    block = EncoderBlock(1, 1, UNetConfig(), bottleneck=True)
    block.conv = conv
    raw, _ = block(x)
    assert torch.allclose(raw, conv(F.pad(x, (1, 2, 1, 2))))


def test_spleeter_sized_unet_parameter_count():
    net = StemsNet(ModelConfig())
    per_stem = sum(p.numel() for p in net.unets[0].parameters())
    f = [16, 32, 64, 128, 256, 512]
    encoder = sum(25 * i * o + o for i, o in zip([2] + f[:-1], f, strict=True)) + sum(2 * c for c in f[:-1])
    dec_in = [512, 512, 256, 128, 64, 32]
    dec_out = [256, 128, 64, 32, 16, 1]
    decoder = sum(25 * i * o + o + 2 * o for i, o in zip(dec_in, dec_out, strict=True))
    final = 2 * 16 + 2
    assert per_stem == encoder + decoder + final  # Spleeter's U-Net, less the BN it builds but never uses
    assert len(net.unets) == 2


def test_config_validation_and_round_trip(tmp_path):
    config = ModelConfig(stems=["a", "b", "c"], sample_rate=16000, frequency_bins=512)
    config.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == config
    with pytest.raises(ConfigError, match="multiple"):
        ModelConfig(frequency_bins=1000).validate()
    with pytest.raises(ConfigError, match=r"^unknown key stemz \(did you mean stems\?\); the top level has stems, "):
        ModelConfig.from_dict({"stemz": ["a"]})  # a model config is not a recipe: the message must not call it one
    with pytest.raises(ConfigError, match=r"^unet.filters must be a list of integers, got \"8\""):
        ModelConfig.from_dict({"unet": {"filters": "8"}})
    with pytest.raises(ConfigError, match="mask_extension"):
        ModelConfig(mask_extension="mirror").validate()


@pytest.mark.parametrize("kernel", [3, 4, 5])
@pytest.mark.parametrize("height,width,size", [(4, 6, (8, 12)), (4, 6, (7, 11)), (5, 3, (9, 6)), (1, 1, (2, 1))])
def test_inference_subpixel_decoder_equals_the_transposed_convolution(kernel, height, width, size):
    """Inference runs each decoder's cropped transposed convolution as one sub-pixel convolution: same numbers."""
    from unet_sep.model.subpixel import SubpixelDecoderBlock
    from unet_sep.model.unet import DecoderBlock

    torch.manual_seed(kernel)
    block = DecoderBlock(6, 5, UNetConfig(filters=[4, 8, 16, 32, 64, 128], kernel_size=kernel), 0.0).double().eval()
    x = torch.randn(2, 6, height, width, dtype=torch.float64)
    with torch.no_grad():
        reference = block(x, size)
        for channels_last in (False, True):  # channels-last inputs take the other phase order; channels-last out
            fast = SubpixelDecoderBlock(block, size, channels_last).eval()
            inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            out = fast(inputs, size)
            assert out.shape == reference.shape
            assert torch.allclose(out, reference, rtol=0, atol=1e-12)
            other = x if channels_last else x.contiguous(memory_format=torch.channels_last)
            assert torch.allclose(fast(other, size), reference, rtol=0, atol=1e-12)  # the other layout too


def test_inference_network_shares_the_weights_and_gives_the_same_numbers():
    """The inference form of a net (sub-pixel decoders made for one input size) holds no copy of the weights, gives
    the net's numbers for that size, and the transposed convolutions' for other sizes, gradients and training."""
    from unet_sep.model.stems import inference_network
    from unet_sep.model.subpixel import SubpixelDecoderBlock

    torch.manual_seed(3)
    config = ModelConfig(unet=UNetConfig(filters=[4, 8, 16]), frequency_bins=64, segment_frames=24)
    net = StemsNet(config).double().eval()
    fast = inference_network(net, 24, 64, channels_last=False)
    assert all(isinstance(block, SubpixelDecoderBlock) for unet in fast.unets for block in unet.decoder)
    assert [p.data_ptr() for p in fast.parameters()] == [p.data_ptr() for p in net.parameters()]
    assert list(fast.state_dict()) == list(net.state_dict())  # same names, nothing added
    used = []
    for unet in fast.unets:
        for block in unet.decoder:
            block.deconv.register_forward_hook(lambda *_: used.append(1))
    x = torch.rand(3, 2, 24, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fast(x), net(x), rtol=0, atol=1e-12)
        assert not used  # the sub-pixel convolutions ran, not the transposed ones
        other = torch.rand(1, 2, 37, 64, dtype=torch.float64)
        assert torch.allclose(fast(other), net(other), rtol=0, atol=1e-12)
    assert used
    assert torch.allclose(fast(x), net(x), rtol=0, atol=1e-12)  # with gradients: the transposed convolutions


