"""pbe_core.prepare: every input form, polarity, latent mask modes, exemplar modes."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pbe_core.prepare import (
    CLIP_MEAN,
    CLIP_STD,
    broadcast_batch,
    edit_to_keep_mask,
    fit_mask_to_image,
    image_to_tensor,
    latent_keep_mask,
    mask_to_tensor,
    masked_image,
    prepare_exemplar,
    to_model_range,
)

RNG = np.random.default_rng(0)


def rgb_array(h: int = 5, w: int = 7) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_bchw(array: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> the expected (1, 3, H, W) float tensor."""
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


# --- image_to_tensor ---------------------------------------------------------------------------


def test_pil_rgb_exact():
    array = rgb_array()
    out = image_to_tensor(Image.fromarray(array))
    assert out.shape == (1, 3, 5, 7) and out.dtype == torch.float32
    assert torch.equal(out, as_bchw(array))


def test_pil_rgba_drops_alpha_without_compositing():
    array = rgb_array()
    alpha = np.zeros((5, 7, 1), dtype=np.uint8)  # fully transparent: colour must survive
    out = image_to_tensor(Image.fromarray(np.concatenate([array, alpha], axis=2), mode="RGBA"))
    assert torch.equal(out, as_bchw(array))


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_pil_grey_is_replicated(mode):
    grey = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    picture = Image.fromarray(grey).convert(mode)
    out = image_to_tensor(picture)
    expected = torch.from_numpy(grey).float() / 255
    for channel in range(3):
        assert torch.equal(out[0, channel], expected)


def test_pil_palette_uses_palette_colours():
    picture = Image.new("P", (3, 2))
    picture.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    picture.putpixel((1, 0), 1)
    picture.putpixel((2, 1), 2)
    out = image_to_tensor(picture)
    assert out[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert out[0, :, 1, 2].tolist() == [0.0, 0.0, 1.0]
    assert out[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]


def test_pil_mode_1():
    picture = Image.fromarray(np.array([[True, False]]))
    assert picture.mode == "1"
    assert image_to_tensor(picture)[0, :, 0].tolist() == [[1.0, 0.0]] * 3


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_pil_16_bit_modes(dtype):
    picture = Image.fromarray(np.array([[0, 32768, 65535]], dtype=dtype))
    assert picture.mode == ("I;16" if dtype == np.uint16 else "I")
    out = image_to_tensor(picture)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_pil_float_mode():
    picture = Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32))
    assert picture.mode == "F"
    assert image_to_tensor(picture)[0, 1, 0].tolist() == [0.0, 0.25, 1.0]


def test_numpy_forms():
    array = rgb_array()
    expected = as_bchw(array)
    assert torch.equal(image_to_tensor(array), expected)
    assert torch.equal(image_to_tensor(array.astype(np.float32) / 255), expected)
    assert torch.allclose(image_to_tensor(array.astype(np.float64)), expected)  # 0..255 floats
    assert torch.allclose(image_to_tensor(array.astype(np.uint16) * 257), expected)
    rgba = np.concatenate([array, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    assert torch.equal(image_to_tensor(rgba), expected)
    assert torch.equal(image_to_tensor(array[None]), expected)  # (B, H, W, C)
    grey = image_to_tensor(array[..., 0])
    assert grey.shape == (1, 3, 5, 7) and torch.equal(grey[0, 2], expected[0, 0])
    assert image_to_tensor(np.ones((2, 2), dtype=bool)).min() == 1.0


def test_tensor_layouts():
    array = rgb_array(6, 9)
    expected = as_bchw(array)
    hwc = torch.from_numpy(array).float() / 255
    assert torch.equal(image_to_tensor(hwc), expected)  # (H, W, C)
    assert torch.equal(image_to_tensor(hwc[None].repeat(2, 1, 1, 1)), expected.repeat(2, 1, 1, 1))
    assert torch.equal(image_to_tensor(expected), expected)  # (B, C, H, W)
    assert torch.equal(image_to_tensor(expected[0]), expected)  # (C, H, W)
    assert torch.equal(image_to_tensor(torch.from_numpy(array)), expected)  # uint8 tensor


def test_ambiguous_layout_prefers_channels_last_unless_told():
    pixels = torch.rand(1, 3, 4, 3)  # fits both (B, C, H, W) and (B, H, W, C)
    assert image_to_tensor(pixels).shape == (1, 3, 3, 4)
    assert torch.equal(image_to_tensor(pixels, channels_last=False), pixels)


def test_one_by_one_and_lists():
    assert image_to_tensor(torch.rand(1, 1, 1, 3)).shape == (1, 3, 1, 1)
    assert image_to_tensor(Image.new("RGB", (1, 1), (255, 0, 0)))[0, :, 0, 0].tolist() == [1, 0, 0]
    batch = image_to_tensor([Image.fromarray(rgb_array()), Image.fromarray(rgb_array())])
    assert batch.shape == (2, 3, 5, 7)
    with pytest.raises(ValueError, match="differ in size"):
        image_to_tensor([Image.new("RGB", (2, 2)), Image.new("RGB", (3, 2))])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rejected_naming_input(bad):
    pixels = torch.rand(1, 4, 4, 3)
    pixels[0, 1, 2, 0] = bad
    with pytest.raises(ValueError, match="exemplar contains NaN or infinite"):
        image_to_tensor(pixels, name="exemplar")
    with pytest.raises(ValueError, match="mask contains NaN"):
        mask_to_tensor(pixels[..., 0])


def test_bad_images_rejected():
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        image_to_tensor(torch.rand(1, 3, 4, 4) * 2 - 1)
    with pytest.raises(ValueError, match="values up to"):
        image_to_tensor(torch.full((4, 4, 3), 300.0))
    with pytest.raises(ValueError, match="no axis of 1, 3 or 4"):
        image_to_tensor(torch.rand(2, 5, 6, 7))
    with pytest.raises(ValueError, match="2 to 4 dimensions"):
        image_to_tensor(torch.rand(1, 1, 3, 4, 4))
    with pytest.raises(TypeError, match="PIL image, numpy array or tensor"):
        image_to_tensor("photo.png")
    with pytest.raises(ValueError, match="empty"):
        image_to_tensor(np.zeros((0, 4, 3), dtype=np.float32))


# --- mask_to_tensor ----------------------------------------------------------------------------


def test_mask_pil_modes():
    grey = np.array([[0, 128, 255]], dtype=np.uint8)
    expected = torch.from_numpy(grey).float().view(1, 1, 1, 3) / 255
    assert torch.equal(mask_to_tensor(Image.fromarray(grey)), expected)  # L
    assert torch.equal(mask_to_tensor(Image.fromarray(grey).convert("RGB")), expected)
    assert torch.equal(mask_to_tensor(Image.fromarray(grey).convert("P")), expected)
    assert mask_to_tensor(Image.fromarray(grey > 100)).flatten().tolist() == [0, 1, 1]  # mode 1
    sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert mask_to_tensor(sixteen).flatten().tolist() == [0.0, 1.0]


def test_mask_colour_uses_luminance_like_pil():
    colour = Image.fromarray(rgb_array())
    expected = torch.from_numpy(np.array(colour.convert("L"))).float() / 255
    assert torch.equal(mask_to_tensor(colour)[0, 0], expected)


def test_mask_with_transparency_is_its_alpha_as_the_webui_reads_it():
    alpha = np.array([[0, 255, 77]], dtype=np.uint8)
    flat_white = np.full((1, 3, 3), 255, dtype=np.uint8)
    strokes = Image.fromarray(np.concatenate([flat_white, alpha[..., None]], axis=2), mode="RGBA")
    assert torch.equal(mask_to_tensor(strokes).flatten(), torch.tensor([0, 255, 77]) / 255)
    # black strokes on a transparent layer whose hidden colour is white: the strokes are the mask
    black_on_clear = np.array([[[255] * 3, [0] * 3, [0] * 3]], dtype=np.uint8)
    picture = Image.fromarray(np.concatenate([black_on_clear, alpha[..., None]], axis=2), mode="RGBA")
    assert torch.equal(mask_to_tensor(picture).flatten(), torch.tensor([0, 255, 77]) / 255)
    opaque = np.concatenate([black_on_clear, np.full((1, 3, 1), 255, np.uint8)], axis=2)
    assert mask_to_tensor(Image.fromarray(opaque, mode="RGBA")).flatten().tolist() == [1.0, 0.0, 0.0]


def test_mask_arrays_and_tensors():
    soft = np.array([[0.0, 0.3, 1.0]], dtype=np.float32)
    expected = torch.from_numpy(soft).view(1, 1, 1, 3)
    assert torch.equal(mask_to_tensor(soft), expected)  # soft values kept, not binarised
    assert torch.allclose(mask_to_tensor(soft * 255), expected)  # float 0..255
    assert torch.allclose(mask_to_tensor((soft * 255).astype(np.uint8)), expected, atol=1 / 255)
    assert mask_to_tensor(soft > 0.5).flatten().tolist() == [0, 0, 1]  # bool
    assert mask_to_tensor(np.array([[0, 1]])).flatten().tolist() == [0, 1]  # int 0/1
    assert mask_to_tensor(np.array([[0, 255]])).flatten().tolist() == [0, 1]  # int 0..255
    tensor = torch.from_numpy(soft)
    assert torch.equal(mask_to_tensor(tensor), expected)  # (H, W)
    assert mask_to_tensor(tensor.repeat(2, 1, 1)).shape == (2, 1, 1, 3)  # (B, H, W)
    assert torch.equal(mask_to_tensor(expected), expected)  # (B, 1, H, W)


def test_bad_masks_rejected():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        mask_to_tensor(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="values up to"):
        mask_to_tensor(np.full((2, 2), 256.0))
    with pytest.raises(ValueError, match="negative"):
        mask_to_tensor(np.full((2, 2), -0.5))


# --- polarity and the model's inputs ------------------------------------------------------------


def test_white_is_edit_so_keep_is_zero_there():
    edit = mask_to_tensor(Image.fromarray(np.array([[255, 0, 200, 100]], dtype=np.uint8)))
    keep = edit_to_keep_mask(edit)
    assert keep.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert edit_to_keep_mask(torch.tensor([0.5, 0.5001]).view(1, 1, 1, 2)).flatten().tolist() == [
        1,
        0,
    ]


def test_keep_mask_matches_reference_recipe_on_every_grey_level():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    reference = 1 - np.asarray(Image.fromarray(grey).convert("L")).astype(np.float32) / 255.0
    reference = np.where(reference >= 0.5, 1.0, 0.0).astype(np.float32)
    keep = edit_to_keep_mask(mask_to_tensor(Image.fromarray(grey)))
    assert torch.equal(keep[0, 0], torch.from_numpy(reference))


def test_keep_mask_and_masked_image_match_diffusers():
    pipeline_module = pytest.importorskip(
        "diffusers.pipelines.deprecated.paint_by_example.pipeline_paint_by_example"
    )
    torch.manual_seed(0)
    image01 = torch.rand(2, 3, 16, 24)
    edit = torch.rand(2, 1, 16, 24)
    edit[0, 0, 0, :4] = torch.tensor([0.0, 0.5, 1.0, 0.49])
    want_keep, want_masked = pipeline_module.prepare_mask_and_masked_image(
        to_model_range(image01), edit.clone()
    )
    keep = edit_to_keep_mask(edit)
    assert torch.equal(keep, want_keep)
    assert torch.equal(masked_image(to_model_range(image01), keep), want_masked)
    assert (masked_image(to_model_range(image01), keep)[keep.expand(-1, 3, -1, -1) == 0] == 0).all()


def test_to_model_range():
    assert to_model_range(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]


def edge_keep_mask() -> torch.Tensor:
    keep = torch.ones(1, 1, 64, 48)
    # an 8x bilinear downscale without antialias reads the two pixels at a block's centre
    # (offsets 3 and 4): edges at 12 and 28 fall between them, 42 and 5 do not
    keep[..., 12:42, 5:28] = 0
    return keep


def test_latent_mask_bilinear_is_soft_at_borders():
    small = latent_keep_mask(edge_keep_mask(), (8, 6), mode="bilinear")
    assert small.shape == (1, 1, 8, 6)
    assert small[0, 0, 1, 2] == 0.5 and small[0, 0, 2, 3] == 0.5  # not re-binarised
    assert small[0, 0, 0, 5] == 1 and small[0, 0, 3, 2] == 0  # far from the edge: exact


def test_latent_mask_nearest_matches_diffusers():
    pipeline_module = pytest.importorskip(
        "diffusers.pipelines.deprecated.paint_by_example.pipeline_paint_by_example"
    )
    keep = edge_keep_mask()
    stand_in = type("Pipe", (), {"vae_scale_factor": 8})()
    want, _ = pipeline_module.PaintByExamplePipeline.prepare_mask_latents(
        stand_in, keep, torch.zeros(1, 4, 8, 6), 1, 64, 48, torch.float32, "cpu", None, False
    )
    nearest = latent_keep_mask(keep, (8, 6), mode="nearest")
    assert torch.equal(nearest, want)
    assert not torch.equal(nearest, latent_keep_mask(keep, (8, 6), mode="bilinear"))
    with pytest.raises(ValueError, match="bilinear"):
        latent_keep_mask(keep, (8, 6), mode="area")


# --- exemplar ----------------------------------------------------------------------------------


def normalised(picture: Image.Image) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    return (pixels - mean) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def test_exemplar_squash_is_the_reference_recipe():
    picture = Image.fromarray(rgb_array(30, 50))
    reference = normalised(picture.convert("RGB").resize((224, 224)))  # PIL's default: bicubic
    assert torch.equal(prepare_exemplar(picture), reference)
    as_tensor = image_to_tensor(picture).permute(0, 2, 3, 1)  # ComfyUI layout, float
    assert torch.equal(prepare_exemplar(as_tensor), reference)


@pytest.mark.parametrize("hw", [(30, 50), (61, 23), (300, 250), (224, 224)])
def test_exemplar_crop_matches_clip_image_processor(hw):
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = transformers.CLIPImageProcessor(
            do_resize=True, size={"shortest_edge": 224}, crop_size=224, do_center_crop=True
        )
    picture = Image.fromarray(rgb_array(*hw))
    want = processor(images=picture, return_tensors="pt").pixel_values.float()
    got = prepare_exemplar(picture, mode="crop")
    assert got.shape == want.shape == (1, 3, 224, 224)
    assert (got - want).abs().max() < 1e-6


def test_exemplar_pad_adds_grey_bars():
    picture = Image.fromarray(rgb_array(20, 60))
    padded = prepare_exemplar(picture, size=30, mode="pad")
    grey = (0.5 * 255 + 0.5) // 1 / 255  # 128 / 255
    bar = (torch.full((3,), grey) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(padded[0, :, 0, :], bar[:, None].expand(3, 30), atol=1e-6)
    assert not torch.allclose(padded[0, :, 15, :], bar[:, None].expand(3, 30), atol=1e-2)


def test_exemplar_mask_greys_background_and_crops_to_object():
    pixels = rgb_array(40, 40)
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:30, 5:15] = 255
    composite = np.full_like(pixels, 128)
    composite[10:30, 5:15] = pixels[10:30, 5:15]
    want = prepare_exemplar(Image.fromarray(composite[10:30, 5:15]))
    got = prepare_exemplar(Image.fromarray(pixels), exemplar_mask=Image.fromarray(mask))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="marks nothing"):
        prepare_exemplar(Image.fromarray(pixels), exemplar_mask=np.zeros((40, 40)))


def test_exemplar_batch_and_bad_mode():
    batch = prepare_exemplar(torch.rand(3, 3, 17, 9), size=16)
    assert batch.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="'squash', 'crop' or 'pad'"):
        prepare_exemplar(torch.rand(1, 3, 8, 8), mode="stretch")


# --- sizes and batches -------------------------------------------------------------------------


def test_mask_size_mismatch_policy():
    mask = torch.zeros(1, 1, 32, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_mask_to_image(mask, (32, 48)) is mask
    with pytest.warns(UserWarning, match="48x32 but the image is 96x64"):
        assert fit_mask_to_image(mask, (64, 96)).shape == (1, 1, 64, 96)
    with pytest.raises(ValueError, match="48x32 but the image is 48x48"):
        fit_mask_to_image(mask, (48, 48))


def test_broadcast_batch():
    one, three = torch.zeros(1, 3, 2, 2), torch.zeros(3, 1, 2, 2)
    a, b = broadcast_batch(one, three, names=("image", "mask"))
    assert a.shape == (3, 3, 2, 2) and b.shape == (3, 1, 2, 2)
    with pytest.raises(ValueError, match="image has 2, mask has 3"):
        broadcast_batch(torch.zeros(2, 3, 2, 2), three, names=("image", "mask"))
    with pytest.raises(ValueError, match="tensor 0 has 2, tensor 1 has 3"):
        broadcast_batch(torch.zeros(2, 3, 2, 2), three)
