"""The identity embedder's mechanics: where it looks (role boxes), what it sees (glimpses), and
that it needs nothing but the image."""

import pytest
import torch
import torch.nn.functional as F

from choi.models.evaluators import IdentityEmbedder, colour_histogram, glimpse, role_boxes


def test_role_boxes_frame_the_half_peak_cells_as_squares():
    soft = torch.zeros(2, 2, 32, 32)
    soft[0, 0, 4:8, 10:12] = 1.0  # 2 cells wide, 4 tall → square on the height
    soft[0, 0, 20, 20] = 0.4  # below half the peak: ignored
    soft[0, 1, 16:32, 0:32] = 0.2  # faint but alone: half *its* peak still frames it
    soft[1, 0, 0:32, 0:32] = 1.0
    soft[1, 1, 10, 10] = 1.0  # one cell: grown to the minimum side
    boxes = role_boxes(soft, margin=0.0, min_side=0.1)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([-0.3125, -0.625, 0.125]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(boxes[1, 0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(boxes[1, 1], torch.tensor([-0.34375, -0.34375, 0.1]))
    assert role_boxes(soft, margin=0.15)[0, 0, 2] == pytest.approx(0.25 * 0.65)


def test_glimpse_of_the_whole_image_is_the_image_resized():
    x = torch.rand(2, 3, 64, 64)
    whole = torch.tensor([[0.0, 0.0, 1.0]]).expand(2, 3)
    out = glimpse(x, whole, 32)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2), atol=1e-5, rtol=0)


def test_glimpse_crops_the_quadrant_it_is_given():
    x = torch.zeros(1, 1, 64, 64)
    x[..., :32, 32:] = 1.0  # top-right quadrant
    out = glimpse(x, torch.tensor([[0.5, -0.5, 0.5]]), 16)
    assert out.min() == 1.0
    assert glimpse(x, torch.tensor([[-0.5, 0.5, 0.5]]), 16).max() == 0.0


@pytest.mark.usefixtures("one_thread")
def test_embedder_outputs_roles_and_follows_its_masks():
    torch.manual_seed(0)
    tiny = {"locator_widths": (8, 8), "glimpse_widths": (8, 16), "glimpse_size": 16, "embed_dim": 12}
    model = IdentityEmbedder(**tiny, input_size=64)
    x = torch.rand(3, 3, 64, 64)
    out = model(x)
    assert out["human"].shape == out["object"].shape == (3, 12)
    assert out["human_attention"].shape == (3, 16, 16)
    torch.testing.assert_close(out["human"].norm(dim=-1), torch.ones(3))
    assert set(model(x, roles=("object",))) == {"object", "human_attention", "object_attention"}
    # Other sizes are resized to input_size first.
    assert model(F.interpolate(x, size=(128, 128)))["object"].shape == (3, 12)
    # The glimpse follows the mask it is given: a different place gives a different embedding.
    left, right = torch.zeros(3, 2, 16, 16), torch.zeros(3, 2, 16, 16)
    left[..., 4:8, 1:5] = 1.0
    right[..., 4:8, 11:15] = 1.0
    assert not torch.allclose(model.embed(x, left)["human"], model.embed(x, right)["human"])


def test_embeddings_do_not_depend_on_which_way_the_image_faces():
    torch.manual_seed(0)
    tiny = {"locator_widths": (8, 8), "glimpse_widths": (8, 16), "glimpse_size": 16, "embed_dim": 12}
    model = IdentityEmbedder(**tiny, input_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        seen, mirrored = model(x), model(x.flip(-1))
        one_way = model(x, mirror=False)
    for role in ("human", "object"):
        torch.testing.assert_close(seen[role], mirrored[role], atol=1e-5, rtol=0)
        torch.testing.assert_close(seen[role].norm(dim=-1), torch.ones(2))
        assert not torch.allclose(seen[role], one_way[role], atol=1e-3)  # the mirror view does count
    torch.testing.assert_close(seen["human_attention"], one_way["human_attention"])


def test_object_factor_probe_reads_the_object_embedding():
    torch.manual_seed(0)
    tiny = {"locator_widths": (8, 8), "glimpse_widths": (8, 16), "glimpse_size": 16, "embed_dim": 12}
    model = IdentityEmbedder(**tiny, input_size=64, object_factor_classes=(3, 5))
    emb = model(torch.rand(2, 3, 64, 64), roles=("object",))["object"]
    logits = model.object_factor_logits(emb)
    assert [lg.shape for lg in logits] == [(2, 3), (2, 5)]
    logits[0].sum().backward()  # the probe trains the object encoder, not only itself
    assert model.encoders[1].head[-1].weight.grad.abs().sum() > 0
    assert model.encoders[0].head[-1].weight.grad is None
    with pytest.raises(ValueError, match="no object factor probe"):
        IdentityEmbedder(**tiny, input_size=64).object_factor_logits(emb)


def test_colour_histogram_counts_only_the_located_colours():
    x = torch.zeros(2, 3, 16, 16)
    x[:, 2] = 1.0  # blue everywhere...
    x[0, :, 4:8, 4:8] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # ...but a red square in image 0
    soft = torch.zeros(2, 4, 4)
    soft[:, 1, 1] = 1.0  # the segment is the square's cell
    h = colour_histogram(x, soft, bins=4)
    torch.testing.assert_close(h.norm(dim=-1), torch.ones(2))
    assert int(h[0].argmax()) == 3 * 16 and h[0].max() == pytest.approx(1.0)  # red only
    assert int(h[1].argmax()) == 3  # blue: the same cell in image 1 is blue
    # Mid-level colours are shared between the two nearest levels of each channel.
    grey = torch.full((1, 3, 8, 8), 0.5)
    assert (colour_histogram(grey, torch.ones(1, 2, 2), bins=4) > 0).sum() == 8


@pytest.mark.usefixtures("one_thread")
def test_embedder_colour_histogram_extends_the_scoring_embedding(tmp_path):
    torch.manual_seed(0)
    tiny = {"locator_widths": (8, 8), "glimpse_widths": (8, 16), "glimpse_size": 16, "embed_dim": 12}
    plain = IdentityEmbedder(**tiny, input_size=64).eval()
    coloured = IdentityEmbedder(**tiny, input_size=64, colour_bins=4, colour_weight=0.5).eval()
    coloured.load_state_dict(plain.state_dict())  # no weights of its own
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(x), coloured(x)
        assert b["object"].shape == (2, 12 + 64)
        torch.testing.assert_close(b["object"].norm(dim=-1), torch.ones(2))
        # The learned part keeps its direction; the histogram is the rest.
        torch.testing.assert_close(F.normalize(b["object"][:, :12], dim=-1), a["object"])
        # Recolouring the image changes the histogram part.
        assert not torch.allclose(coloured(x.flip(1))["object"][:, 12:], b["object"][:, 12:])
    coloured.save_pretrained(tmp_path)
    again = IdentityEmbedder.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x)["object"], b["object"])
    for bad in ({"colour_bins": 1}, {"colour_bins": 4, "colour_weight": -1.0}):
        with pytest.raises(ValueError, match="colour_bins"):
            IdentityEmbedder(**tiny, **bad)
