"""The ``capable`` model size (ResNet-18 slice encoder): parameter counts and matching (counted on the
meta device), a forward/backward smoke run at 32 px, the ``arch`` config field, and checkpoints
written before ``arch`` existed loading as the conv tokenizer."""

import pytest
import torch

from world_model import build_method, load_encoder
from world_model.config import METHODS, MODEL_SIZES, make_config
from world_model.data import clip_batches
from world_model.model import count_params
from world_model.evaluation.finetune import reference_backbone
from world_model.tokenizer import ResNetTokenizer, Tokenizer
from world_model.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPABLE = MODEL_SIZES["capable"]


def _meta(method, model=CAPABLE):
    with torch.device("meta"):
        return build_method(model, method)


def test_capable_parameter_counts_are_resnet18_class_and_matched():
    ref = _meta("navwm")
    assert isinstance(ref.tokenizer, ResNetTokenizer)
    assert 10e6 <= count_params(ref.tokenizer.enc) <= 25e6  # the slice encoder alone: ResNet-18 class
    n_ref = count_params(ref)
    assert 10e6 <= n_ref <= 25e6
    for method in METHODS:
        n = count_params(_meta(method))
        assert 10e6 <= n <= 25e6 and abs(n - n_ref) <= 0.2 * n_ref, (method, n, n_ref)
    assert _meta("mae2d").width == _meta("tokenizer").width  # the 2D MAE is the tokenizer-only architecture


def test_capable_forward_backward_at_32px():
    mc, tc = make_config("capable", method="navwm_joint", size=32, window=3, subjects="template", batch=2, steps=4,
                         stage1_frac=0.5, rollout_steps=2, threads=1)
    torch.manual_seed(0)
    m = build_method(mc, "navwm_joint", tc)
    batch = next(clip_batches(tc, mc))
    z = m.encode(batch["frames"][:, 0])
    assert z.shape == (2, mc.latent, 4, 4) and m.decode(z).shape == (2, 1, 32, 32)
    f = m.features(batch["frames"][:, 0])
    assert f.shape == (2, m.feature_dim) and torch.isfinite(f).all()
    m.stage(3)  # stage 2: tokenizer and dynamics train together
    out = m.compute_loss(batch, 3)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    for part in ("tokenizer.enc.", "tokenizer.dec.", "dynamics."):
        assert any(n.startswith(part) and p.grad is not None and p.grad.abs().sum() > 0
                   for n, p in m.named_parameters()), part


def test_arch_is_a_checked_config_field():
    assert make_config("capable")[0].arch == "resnet" and make_config("tiny")[0].arch == "conv"
    with pytest.raises(ValueError, match="arch"):
        make_config("tiny", arch="vit")


def test_checkpoints_without_arch_load_as_the_conv_tokenizer(tmp_path):
    small = dict(size=32, width=4, latent=4, dim=16, depth=1, heads=2, patch=2, window=3)
    mc, tc = make_config("tiny", method="tokenizer", subjects="template", batch=2, steps=1, threads=1,
                         out=str(tmp_path / "t"), eval_every=1000, **small)
    train(mc, tc, progress=False)
    state = torch.load(tmp_path / "t" / "last.pt", weights_only=True)
    del state["config"]["model"]["arch"]  # as written before the field existed
    torch.save(state, tmp_path / "old.pt")
    old, new = load_encoder(str(tmp_path / "old.pt")), load_encoder(str(tmp_path / "t" / "last.pt"))
    assert old.cfg.arch == "conv" and type(old.tokenizer) is Tokenizer
    frames = torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8)
    assert torch.equal(old.features(frames), new.features(frames))


def test_capable_reference_backbone_is_the_slice_encoder():
    with torch.device("meta"):
        ref = reference_backbone("capable")
    assert count_params(ref) == count_params(_meta("navwm").tokenizer.enc)
    small = reference_backbone("cnn")
    assert small.features(torch.zeros(2, 32, 32, dtype=torch.uint8)).shape[0] == 2
    with pytest.raises(ValueError, match="reference arch"):
        reference_backbone("vit")


def test_random_init_twins_keep_the_model_size():
    from world_model.evaluation.encoders import EncoderEntry
    from world_model.evaluation.pipeline import scratch_entries

    mc = make_config("capable", size=32, width=8, latent=4, dim=16, depth=1, heads=2)[0]
    entries = [EncoderEntry(m, 0, build_method(mc, m)) for m in ("navwm", "tokenizer")]
    twins = {e.method: e.encoder for e in scratch_entries(entries)}
    assert set(twins) == {"random_init", "tokenizer_init"}
    assert all(t.cfg == mc for t in twins.values())
    assert count_params(twins["tokenizer_init"]) == count_params(entries[1].encoder)
