"""Evaluator training, the evaluator suite and `choi eval` end to end on a tiny HOI-World dataset."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from choi.cli import main
from choi.data.shards import iter_samples
from choi.data.synth import SynthConfig, build_synth
from choi.errors import ChoiError
from choi.evaluation import benchmark
from choi.evaluation.benchmark import EvalConfig, run_benchmark
from choi.evaluation.evaluators import EvaluatorSuite
from choi.pipelines import baselines
from choi.pipelines.baselines import Request, copy_paste
from choi.training.evaluators import EvaluatorDataConfig, train_evaluators


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("hoiw")
    build_synth(root, SynthConfig(n=16, split="train", seed=0, resolution=64, shard_size=8))
    build_synth(root, SynthConfig(n=12, split="test", seed=0, resolution=64, shard_size=6))
    return root


@pytest.fixture(scope="module")
def evaluators(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluators")
    models = train_evaluators(str(dataset), str(out), steps=2, batch_size=8, workers=0)
    root = tmp_path_factory.mktemp("suite")
    for kind, path in models.items():
        (root / kind).symlink_to(path)
    return root


def test_suite_scores_images_only(dataset, evaluators):
    suite = EvaluatorSuite.load(evaluators)
    samples = list(iter_samples(dataset, split="test"))[:5]
    images = np.stack([s.image for s in samples])
    probs = suite.classify_images(images)
    assert probs.shape == (5, 26) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    emb = suite.embed(images)
    # A learned part and the colour histogram (choi train evaluators gives new embedders 16 levels).
    assert emb["human"].shape == emb["object"].shape == (5, 128 + 16**3)
    np.testing.assert_allclose(np.linalg.norm(emb["human"], axis=1), 1, atol=1e-5)
    # Batch-size independence: one image alone gives the same embedding.
    np.testing.assert_allclose(suite.embed(images[:1])["human"], emb["human"][:1], atol=1e-5)
    mprobs = suite.classify_masks(np.stack([s.human_mask for s in samples]), np.stack([s.object_mask for s in samples]))
    assert mprobs.shape == (5, 26)


def test_suite_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ChoiError, match="no trained evaluators"):
        EvaluatorSuite.load(tmp_path)


def test_suite_broken_config_is_a_clear_error(evaluators, tmp_path):
    import shutil

    broken = tmp_path / "suite"
    for kind in ("interaction", "mask", "identity"):
        shutil.copytree(evaluators / kind, broken / kind)
    config = json.loads((broken / "identity" / "config.json").read_text())
    (broken / "identity" / "config.json").write_text(json.dumps({**config, "colour_bins": 1}))
    with pytest.raises(ChoiError, match="cannot load the identity evaluator .*colour_bins"):
        EvaluatorSuite.load(broken)


def test_copy_paste_stays_in_box_and_keeps_background(dataset):
    s = next(iter(iter_samples(dataset, split="test")))
    req = Request.from_sample(s)
    out = copy_paste(req)
    h, w = s.image.shape[:2]
    x1, y1, x2, y2 = req.box
    inside = np.zeros((h, w), bool)
    inside[int(np.floor(y1 * h)) : int(np.ceil(y2 * h)), int(np.floor(x1 * w)) : int(np.ceil(x2 * w))] = True
    assert out.human_mask.any() and out.object_mask.any()
    assert not (out.human_mask & ~inside).any() and not (out.object_mask & ~inside).any()
    np.testing.assert_array_equal(out.image[~inside], s.background[~inside])
    assert not (out.human_mask & out.object_mask).any()


def test_eval_end_to_end_cached_and_deterministic(dataset, evaluators, tmp_path, monkeypatch):
    cfg = EvalConfig(
        data=str(dataset),
        out=str(tmp_path / "report"),
        methods=("gt", "choi-tiny", "copy-paste"),
        n=5,
        seed=3,
        evaluators=str(evaluators),
    )

    def no_weights(model):
        assert model == "choi-tiny"
        raise baselines.MethodUnavailable("choi-tiny weights cannot be loaded: test")

    monkeypatch.setattr(baselines, "_pipeline", no_weights)
    report = run_benchmark(cfg)
    assert "missing" in report["methods"]["choi-tiny"]  # not faked
    for name in ("gt", "copy-paste"):
        m = report["methods"][name]
        assert m["n"] == 5 and 0 <= m["interaction_acc"] <= 100 and "fid" in m["quality"]
        assert 0 <= m["controls"]["box_iou"] <= 100
    # Ground truth reproduces the requested box and background exactly; copy-paste keeps the background too.
    assert report["methods"]["gt"]["controls"]["box_iou"] > 60
    assert report["methods"]["gt"]["mask_acc"] is not None
    assert set(report["methods"]["gt"]["per_class_mask_acc"]) == set(report["methods"]["gt"]["per_class_acc"])
    for key in ("recognizer_acc_gt", "swapped_interaction_accepted", "retrieval_human_gt", "swapped_human_retrieved"):
        assert key in report["validation"]
    v = report["validation"]
    assert v["retrieval_object_gt"] <= v["retrieval_object_gt_ties_allowed"] <= 100
    assert 0 < v["retrieval_object_gt_ceiling"] <= 100
    root = tmp_path / "report"
    text = (root / "report.md").read_text()
    assert "| gt |" in text and "| choi-tiny | missing" in text and "| copy-paste |" in text
    for f in ("metrics.json", "per_class_accuracy.png", "grid_gt.png", "grid_copy-paste.png"):
        assert (root / f).stat().st_size > 0
    assert len(list((root / "outputs" / "copy-paste").glob("*.png"))) == 10  # image + masks per request

    # A re-run reads every output from the cache and gives the same numbers.
    calls = []
    monkeypatch.setattr(baselines, "copy_paste", lambda *a: calls.append(a))
    again = run_benchmark(cfg)
    assert calls == []
    assert json.dumps(again["methods"], sort_keys=True) == json.dumps(report["methods"], sort_keys=True)


def test_eval_model_option_reaches_the_model_rows_and_guards_their_cache(dataset, evaluators, tmp_path, monkeypatch):
    from choi.evaluation.benchmark import run_method

    samples = list(iter_samples(dataset, split="test"))[:2]
    made = []

    def fake_model_row(request, sample, model):
        made.append(model)
        return baselines.MethodOutput(request.background.copy())

    row = baselines.Method("choi-tiny", "a model row", fake_model_row, uses_model=True)
    root = tmp_path / "report"
    mine = tmp_path / "my-model"
    run_method(row, samples, EvalConfig(data=str(dataset), out=str(root), model=str(mine)), root)
    assert made == [str(mine)] * 2 and (root / "outputs" / "choi-tiny" / "model.txt").read_text().strip() == str(mine)
    # The same model again reads the cache; another model would mix outputs: a one-line error.
    run_method(row, samples, EvalConfig(data=str(dataset), out=str(root), model=str(mine)), root)
    assert len(made) == 2
    with pytest.raises(ChoiError, match="holds outputs of model .*my-model, not choi-tiny"):
        run_method(row, samples, EvalConfig(data=str(dataset), out=str(root)), root)
    # A cache from before the marker holds the shipped model's outputs.
    legacy = tmp_path / "legacy"
    (legacy / "outputs" / "choi-tiny").mkdir(parents=True)
    (legacy / "outputs" / "choi-tiny" / "old.png").write_bytes(b"")
    with pytest.raises(ChoiError, match="holds outputs of model choi-tiny"):
        run_method(row, samples, EvalConfig(data=str(dataset), out=str(legacy), model=str(mine)), legacy)
    # Through the CLI: a folder that is no model leaves the model rows missing, never faked.
    out = tmp_path / "cli"
    args = ["eval", "--data", str(dataset), "--methods", "gt,gt-mask", "--out", str(out), "--n", "3",
            "--evaluators", str(evaluators), "--model", str(tmp_path / "nope")]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "weights cannot be loaded" in metrics["methods"]["gt-mask"]["missing"]
    assert metrics["config"]["model"] == str(tmp_path / "nope") and "nope" in (out / "report.md").read_text()
    # Nothing was made with it, so the same report folder takes the right model next time.
    assert main([*args[:-1], "choi-tiny"]) == 0
    assert "missing" not in json.loads((out / "metrics.json").read_text())["methods"]["gt-mask"]


def test_eval_cli_errors(dataset, tmp_path, capsys):
    assert main(["eval", "--data", str(dataset), "--methods", "gt,bogus", "--out", str(tmp_path / "r")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nope"), "--methods", "gt", "--out", str(tmp_path / "r")]) == 2
    assert main(["eval", "--data", str(dataset), "--methods", "gt", "--out", str(tmp_path / "r"), "--n", "0"]) == 2
    # More requests than the split can serve (it also needs as many disjoint real renders for FID).
    assert main(["eval", "--data", str(dataset), "--methods", "gt", "--out", str(tmp_path / "r"), "--n", "50"]) == 2
    assert "needs" in capsys.readouterr().err


def test_evaluator_training_cli_errors(dataset, tmp_path):
    assert main(["train", "evaluators", "--data", str(dataset), "--out", str(tmp_path / "e"), "--kinds", "x"]) == 2
    assert main(["train", "evaluators", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "e")]) == 2


def test_the_identity_evaluator_is_refused_under_several_processes(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before any process group starts
    assert main(["train", "evaluators", "--data", str(dataset), "--out", str(tmp_path / "e")]) == 2
    assert "the identity evaluator trains in one process" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_identity_evaluator_fine_tunes_from_trained_evaluators(dataset, evaluators, tmp_path):
    from choi.data.batch import collate
    from choi.models.evaluators import IdentityEmbedder
    from choi.training.evaluators import IdentityTask, object_factor_targets

    task = IdentityTask(EvaluatorDataConfig(data=str(dataset), batch_size=4, num_workers=0), init_from=str(evaluators))
    model = task.build_model()
    start = IdentityEmbedder.from_pretrained(evaluators / "identity").state_dict()
    for name, tensor in model.state_dict().items():  # everything it had is kept
        torch.testing.assert_close(tensor, start[name])
    batch = collate(list(iter_samples(dataset, split="train"))[:4])
    targets = object_factor_targets(batch)
    assert targets.shape == (4, 6) and (targets >= -1).all() and (targets[:, [0, 3, 4]] >= 0).all()
    # a factor no object of the batch shows (balls never draw their accent) adds nothing, not NaN
    hidden = targets.clone()
    hidden[:, 5] = -1
    embedding = F.normalize(torch.randn(4, model.config.embed_dim), dim=-1)
    assert torch.isfinite(IdentityTask.factor_loss(model, embedding, hidden))
    assert torch.isfinite(IdentityTask.factor_loss(model, embedding, torch.full_like(targets, -1)))
    loss, logs = task.loss(model, batch)
    assert torch.isfinite(loss) and logs["factors"] > 0
    # The second batch also meets the first batch's reference objects, from the memory.
    again, _ = task.loss(model, batch)
    assert torch.isfinite(again) and task.memory.get()[0].shape == (8, model.config.embed_dim)
    # An embedder trained before the factor probe existed: kept, with a fresh probe.
    old_dir, small_dir = tmp_path / "old", tmp_path / "small"
    old = IdentityEmbedder()
    old.save_pretrained(old_dir / "identity")
    grown = IdentityTask(task.data, init_from=str(old_dir)).build_model()
    assert grown.object_factors is not None
    torch.testing.assert_close(grown.locator.stem.weight, old.locator.stem.weight)
    IdentityEmbedder(embed_dim=64).save_pretrained(small_dir / "identity")
    with pytest.raises(ChoiError, match="not an evaluator of this shape"):
        IdentityTask(task.data, init_from=str(small_dir)).build_model()
    # A folder without an identity evaluator is a one-line error, before any run folder is made.
    out = tmp_path / "ft"
    assert main(["train", "evaluators", "--data", str(dataset), "--out", str(out), "--kinds", "identity",
                 "--init-from", str(tmp_path), "--steps", "1"]) == 2  # fmt: skip
    assert not out.exists()


def test_info_nce_memory_adds_negatives_and_keeps_the_latest():
    from choi.training.evaluators import EmbeddingMemory, info_nce

    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 8), dim=-1)
    k = F.normalize(q + 0.1 * torch.randn(4, 8), dim=-1)
    ids = torch.arange(4)
    memory = EmbeddingMemory(6)
    assert memory.get() is None
    plain = info_nce(q, k, ids, memory=memory.get())
    torch.testing.assert_close(plain, info_nce(q, k, ids))
    # A near copy of query 0 under another identity is a hard negative: the loss rises.
    memory.push(q[:1] + 0.01, torch.tensor([99]))
    assert info_nce(q, k, ids, memory=memory.get()) > plain
    # A remembered key with a query's own identity is a positive, not a negative.
    same, other = EmbeddingMemory(6), EmbeddingMemory(6)
    same.push(q[:1], ids[:1])
    other.push(q[:1], torch.tensor([99]))
    assert info_nce(q, k, ids, memory=same.get()) < info_nce(q, k, ids, memory=other.get())
    # Newest first, the oldest dropped beyond the size; entries carry no gradient.
    memory.push(k.requires_grad_(), ids + 10)
    memory.push(k[:2], ids[:2] + 20)
    assert memory.get()[1].tolist() == [20, 21, 10, 11, 12, 13] and not memory.get()[0].requires_grad
    off = EmbeddingMemory(0)
    off.push(k, ids)
    assert off.get() is None


def test_object_identities_are_keyed_by_category_and_id():
    from choi.data.batch import object_key

    assert object_key("ball", 5) != object_key("cup", 5)
    assert object_key("ball", 5) == object_key("ball", 5) != object_key("ball", 6)


def test_retrieval_scores_objects_by_look():
    from choi.data.batch import collate, object_key, object_look_key
    from choi.world.objects import look_id

    twin = next(i for i in range(1, 8000) if look_id("ball", i) == look_id("ball", 0))
    other = next(i for i in range(1, 8000) if look_id("ball", i) != look_id("ball", 0))
    assert object_look_key("ball", twin) == object_look_key("ball", 0) != object_look_key("ball", other)
    assert object_look_key("ball", 0) != object_look_key("cup", 0)
    assert object_look_key("motorcycle", 7) == object_key("motorcycle", 7)  # real data: its own key
    from choi.world import render_sample

    samples = [render_sample("test", i, seed=0) for i in range(2)]
    batch = collate(samples)
    want = [object_look_key(s.object_category, s.object_id) for s in samples]
    assert batch["object_look"].tolist() == want


def test_object_ties_count_what_neither_the_scene_nor_the_reference_can_show():
    from dataclasses import replace

    from choi.data.batch import object_look_key
    from choi.evaluation.benchmark import _object_tie_checks, object_ties
    from choi.world import render_sample
    from choi.world.objects import ObjectIdentity
    from choi.world.renderer import object_view

    # Seen from the side a skateboard shows its deck and wheels, not its graphic or pattern.
    board = ObjectIdentity.from_id("skateboard", 0)
    twin = next(
        i for i in range(1, 5000)
        if (lambda o: o.main == board.main and o.accent == board.accent and o.second != board.second)(
            ObjectIdentity.from_id("skateboard", i)
        )
    )  # fmt: skip
    side, bottom = {"view": "side"}, {"view": "bottom"}
    assert np.array_equal(object_view("skateboard", 0, side), object_view("skateboard", twin, side))
    assert not np.array_equal(object_view("skateboard", 0, bottom), object_view("skateboard", twin, bottom))

    sample = render_sample("test", 0, seed=0)

    def request(i, seen, shown):
        meta = {**sample.meta, "object_pose": {"state": seen}, "object_ref_view": {"state": shown}}
        return replace(sample, object_category="skateboard", object_id=i, meta=meta)

    looks = np.array([object_look_key("skateboard", i) for i in (0, twin)])
    # The scenes hide the difference, the references show it: still a tie.
    ties = object_ties([request(0, side, bottom), request(twin, side, bottom)])
    assert ties == [{looks[1]}, {looks[0]}]
    # The scenes show it and so do the references: no tie.
    assert object_ties([request(0, bottom, bottom), request(twin, bottom, bottom)]) == [set(), set()]
    # The scenes show it, the references hide it: a tie.
    assert object_ties([request(0, bottom, side), request(twin, bottom, side)]) == [{looks[1]}, {looks[0]}]

    tied = [request(0, side, bottom), request(twin, side, bottom)]
    checks = _object_tie_checks(tied, retrieved=looks[::-1], looks=looks)  # each retrieved the other
    assert checks == {"retrieval_object_gt_ties_allowed": 100.0, "retrieval_object_gt_ceiling": 50.0}
    apart = [request(0, bottom, bottom), request(twin, bottom, bottom)]
    checks = _object_tie_checks(apart, retrieved=looks[::-1], looks=looks)
    assert checks == {"retrieval_object_gt_ties_allowed": 0.0, "retrieval_object_gt_ceiling": 100.0}
    assert object_ties([replace(sample, source="hico")]) is None  # no renderer to ask


def test_foreground_box_from_background_difference():
    bg = np.zeros((20, 20, 3), np.uint8)
    img = bg.copy()
    img[5:10, 2:8] = 200
    assert benchmark.foreground_box(img, bg) == (2 / 20, 5 / 20, 8 / 20, 10 / 20)


@pytest.mark.usefixtures("one_thread")
def test_model_methods_run_the_real_pipeline_and_its_stage_two(tiny_model_dir):
    """choi-tiny, single-stage and gt-mask on a real (tiny, random) choi folder: the two-stage row is the
    pipeline's own output, gt-mask is the pipeline given the true masks, and both stage-2 rows keep the
    background outside what they paint."""
    from choi.world import render_sample

    sample = render_sample("test", 3, seed=0, resolution=64)
    request, model = Request.from_sample(sample), str(tiny_model_dir)
    pipe, seed = baselines._pipeline(model), baselines.request_seed(request)  # the methods' own, loaded once
    common = dict(human=request.human_ref, object=request.object_ref, interaction=request.text, seed=seed)
    common["background"] = request.background

    two = baselines.two_stage(request, sample, model)
    direct = pipe(**common, box=request.box)
    assert np.array_equal(two.image, direct.images[0]) and np.array_equal(two.human_mask, direct.human_masks[0])
    gt = baselines.gt_mask(request, sample, model)
    given = pipe(**common, mask=(sample.human_mask, sample.object_mask))
    assert np.array_equal(gt.image, given.images[0]) and np.array_equal(gt.object_mask, sample.object_mask)
    one = baselines.single_stage(request, sample, model)
    assert one.image.shape == gt.image.shape == sample.background.shape and one.human_mask is None
    for image in (gt.image, one.image):
        assert (image == sample.background).all(-1).mean() > 0.3  # background kept outside the painted region
        assert not np.array_equal(image, sample.background)


def test_the_choi_sd_row_needs_a_model_folder(tmp_path, capsys):
    from choi.cli import main

    assert main(["eval", "--data", str(tmp_path), "--methods", "gt,choi-sd", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "the choi-sd row runs --model" in err and err.count("\n") == 1 and not (tmp_path / "r").exists()
