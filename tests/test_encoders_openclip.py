"""BiomedCLIP and UniMed-CLIP loaders (open_clip) on small randomly initialised checkpoints that the tests write in
exactly the published formats (BiomedCLIP: open_clip's Hugging Face layout; UniMed-CLIP: a ``.pt`` state dict whose
text tower is named ``text_encoder``). The towers are shrunk (a tiny timm ViT / a 2-layer ViT, a 1-layer BERT);
configs, key names, preprocessing and tokenisation are the real ones.

open_clip needs torchvision, which imports only beside torch 2.14.1 here: run these in .venv-clip
(``bash .ci/clip-env.sh && .venv-clip/bin/python -m pytest -m openclip tests/test_encoders_openclip.py``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.openclip

try:
    import open_clip  # noqa: F401
    import torch
    import torchvision  # noqa: F401

    HAVE_OPEN_CLIP = True
    WHY = ""
except Exception as e:  # ImportError, or torchvision's operator registration failing beside this torch
    HAVE_OPEN_CLIP = False
    WHY = f"open_clip not importable here ({type(e).__name__}); run in .venv-clip (bash .ci/clip-env.sh)"

needs_open_clip = pytest.mark.skipif(not HAVE_OPEN_CLIP, reason=WHY or "open_clip missing")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(
    "a chest x ray ct mri of the brain with pneumonia effusion normal lung liver mass no yes left right image "
    "scan shows showing tumor tumour ##s ##ing . , : -".split()))
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def write_bert(d, hidden=32):
    """A tiny BiomedBERT-format text tower directory: config.json + BERT WordPiece tokenizer files."""
    from transformers import BertConfig

    d.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512).save_pretrained(d)
    write_tokenizer(d)
    return d


def write_tokenizer(d):
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                                         "model_max_length": 512}))
    (d / "special_tokens_map.json").write_text(json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]",
                                                           "pad_token": "[PAD]", "unk_token": "[UNK]",
                                                           "mask_token": "[MASK]"}))


def biomedclip_config(text_name="microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"):
    """BiomedCLIP's open_clip_config.json, with the vision tower shrunk to timm's vit_tiny_patch16_224."""
    return {"model_cfg": {"embed_dim": 512,
                          "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                                         "timm_pool": "", "timm_proj": "linear", "image_size": 224},
                          "text_cfg": {"hf_model_name": text_name, "hf_tokenizer_name": text_name,
                                       "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                                       "context_length": 256}},
            "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}}


@pytest.fixture(scope="module")
def biomedclip_dir(tmp_path_factory):
    if not HAVE_OPEN_CLIP:
        pytest.skip(WHY)
    d = tmp_path_factory.mktemp("biomedclip")
    write_bert(d / "text")
    write_tokenizer(d)
    cfg = biomedclip_config()
    (d / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    mc = json.loads(json.dumps(cfg["model_cfg"]))
    mc["text_cfg"]["hf_model_name"] = str(d / "text")
    mc["text_cfg"]["hf_model_pretrained"] = False
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(**mc)
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


@pytest.fixture(scope="module")
def unimed_ckpt(tmp_path_factory):
    if not HAVE_OPEN_CLIP:
        pytest.skip(WHY)
    from ragmed.encoders.clip import unimed_model_cfg

    d = tmp_path_factory.mktemp("unimed")
    text = write_bert(d / "BiomedBERT")
    cfg, _ = unimed_model_cfg("ViT-B-16", str(text))
    cfg["vision_cfg"].update(width=64, layers=2, head_width=32)
    torch.manual_seed(1)
    model = open_clip.CustomTextCLIP(**cfg)
    # UniMed-CLIP's training code names the text tower `text_encoder` and saves {"state_dict": ...} from DDP.
    sd = {"module." + (k.replace("text.", "text_encoder.", 1) if k.startswith("text.") else k): v
          for k, v in model.state_dict().items()}
    torch.save({"epoch": 10, "state_dict": sd}, d / "unimed_clip_vit_b16.pt")
    return d / "unimed_clip_vit_b16.pt", text


def _images(n=5, seed=0):
    from ragmed.io import MedicalImage

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = (180 + 20 * i, 240) if i % 2 else (256, 200, 3)
        out.append(MedicalImage(pixels=rng.random(shape, dtype=np.float32), source=f"img{i}", content_hash=str(i),
                                format="png"))
    return out


def _contract(img_enc, txt_enc, dim):
    ims = _images()
    a = img_enc.encode_images(ims)
    assert a.shape == (len(ims), dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, img_enc.encode_images(ims))  # deterministic
    singles = np.concatenate([img_enc.encode_images([im]) for im in ims])
    np.testing.assert_allclose(a, singles, atol=2e-5)  # a batch of N equals N singles
    assert not np.allclose(a[0], a[1])
    texts = ["chest x ray with pneumonia", "mri of the brain", "normal lung"]
    t = txt_enc.encode_texts(texts)
    assert t.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t, np.concatenate([txt_enc.encode_texts([s]) for s in texts]), atol=2e-5)
    assert img_enc.space == txt_enc.space  # one space: image↔text search is allowed


@needs_open_clip
def test_biomedclip_contract_and_preprocessing(biomedclip_dir):
    from PIL import Image
    from torchvision import transforms as T

    from ragmed.encoders import create_encoder

    img = create_encoder("biomedclip", role="image", path=str(biomedclip_dir))
    txt = create_encoder("biomedclip", role="text", path=str(biomedclip_dir))
    assert img.backend is txt.backend  # loaded once
    assert img.dim == 512 and img.id.startswith("biomedclip:")
    _contract(img, txt, 512)
    # published preprocessing: shortest side → 224 (bicubic), centre crop, OpenAI mean/std
    pil = Image.fromarray((np.random.default_rng(3).random((300, 410, 3)) * 255).astype(np.uint8))
    ref = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                     T.Normalize(OPENAI_MEAN, OPENAI_STD)])(pil)
    got = img.backend.preprocess(pil)
    assert tuple(got.shape) == (3, 224, 224)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)
    assert tuple(img.backend.tokenizer(["a chest x ray"]).shape) == (1, 256)  # context 256


@needs_open_clip
def test_biomedclip_weights_are_the_checkpoint(biomedclip_dir):
    """The loaded vision tower reproduces the checkpoint exactly (no silent random init)."""
    from ragmed.encoders.clip import load_biomedclip

    b = load_biomedclip(str(biomedclip_dir))
    sd = torch.load(biomedclip_dir / "open_clip_pytorch_model.bin", weights_only=True)
    for k, v in b.model.state_dict().items():
        if k in sd:
            assert torch.equal(v, sd[k]), k


@needs_open_clip
def test_unimed_clip_b16(unimed_ckpt):
    from ragmed.encoders import create_encoder

    ckpt, text = unimed_ckpt
    kw = dict(path=str(ckpt), text_model=str(text), vision_overrides={"width": 64, "layers": 2, "head_width": 32})
    img = create_encoder("unimed-clip", role="image", **kw)
    txt = create_encoder("unimed-clip", role="text", **kw)
    assert img.dim == 512 and img.backend.image_size == 224
    _contract(img, txt, 512)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    got = img.backend.model.state_dict()
    assert torch.equal(got["text.proj.0.weight"], sd["module.text_encoder.proj.0.weight"])
    assert torch.equal(got["visual.conv1.weight"], sd["module.visual.conv1.weight"])
    assert tuple(img.backend.tokenizer(["mri of the brain"]).shape) == (1, 256)


@needs_open_clip
def test_unimed_clip_l14_336_preprocessing(tmp_path):
    """ViT-L/14 at 336 px, 768-d: a tiny tower in the same format; preprocessing at 336 px."""
    from PIL import Image

    from ragmed.encoders.clip import load_unimed_clip, unimed_model_cfg

    text = write_bert(tmp_path / "bert")
    cfg, size = unimed_model_cfg("ViT-L-14-336", str(text))
    assert size == 336 and cfg["embed_dim"] == 768 and cfg["quick_gelu"]
    over = {"width": 64, "layers": 1, "head_width": 32}
    cfg["vision_cfg"].update(over)
    model = open_clip.CustomTextCLIP(**cfg)
    sd = {(k.replace("text.", "text_encoder.", 1) if k.startswith("text.") else k): v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "unimed_clip_vit_l14_base_text_encoder.pt")
    b = load_unimed_clip(str(tmp_path / "unimed_clip_vit_l14_base_text_encoder.pt"), arch="ViT-L-14-336",
                         text_model=str(text), vision_overrides=over)
    x = b.preprocess(Image.new("RGB", (500, 400), (10, 200, 30)))
    assert tuple(x.shape) == (3, 336, 336)
    assert b.encode_image(x[None]).shape == (1, 768)


@needs_open_clip
def test_unimed_clip_wrong_arch_is_a_clear_error(unimed_ckpt):
    from ragmed.encoders.clip import load_unimed_clip
    from ragmed.errors import EncoderError

    ckpt, text = unimed_ckpt
    with pytest.raises(EncoderError, match="does not fit the published architecture"):
        load_unimed_clip(str(ckpt), arch="ViT-B-16", text_model=str(text))  # full-size tower vs tiny checkpoint


def test_missing_paths_name_the_path_and_how_to_get_weights(tmp_path):
    """Runs everywhere: the layout checks come before open_clip is imported."""
    from ragmed.encoders import create_encoder
    from ragmed.errors import ModelNotFoundError

    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFoundError) as e:
        create_encoder("biomedclip", role="image", path=str(missing))
    assert str(missing) in str(e.value) and "huggingface-cli download microsoft/BiomedCLIP" in str(e.value)
    with pytest.raises(ModelNotFoundError) as e:
        create_encoder("unimed-clip", role="image", path=str(missing / "unimed_clip_vit_b16.pt"))
    assert "unimed_clip_vit_b16.pt" in str(e.value) and "UniMed-CLIP" in str(e.value)
    with pytest.raises(ModelNotFoundError, match="needs `path`"):
        create_encoder("biomedclip", role="image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="open_clip_config.json"):
        create_encoder("biomedclip", role="image", path=str(tmp_path / "empty"))
