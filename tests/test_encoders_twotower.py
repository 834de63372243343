"""transformers CLIP / SigLIP (MedSigLIP-448) loaders and the MedImageInsight layout / preprocessing / error, on
small randomly initialised models the tests write with ``save_pretrained`` (the format a Hugging Face download has).
Towers are shrunk; the image processors are the published ones (MedSigLIP: 448×448, bilinear, mean = std = 0.5)."""
from __future__ import annotations


import numpy as np
import pytest

from tests.test_encoders_openclip import VOCAB, _contract, write_tokenizer


def _bert_tokenizer(d):
    from transformers import BertTokenizer

    write_tokenizer(d)
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    d = tmp_path_factory.mktemp("clip")
    cfg = CLIPConfig(text_config={"vocab_size": len(VOCAB), "hidden_size": 32, "intermediate_size": 37,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 77,
                                  "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3},
                     vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
                     projection_dim=24)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(d)
    _bert_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    d = tmp_path_factory.mktemp("medsiglip")
    cfg = SiglipConfig(text_config={"vocab_size": len(VOCAB), "hidden_size": 32, "intermediate_size": 37,
                                    "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64},
                       vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "image_size": 448, "patch_size": 64})
    torch.manual_seed(0)
    SiglipModel(cfg).save_pretrained(d)
    # MedSigLIP-448's published preprocessor: 448×448, bilinear, rescale 1/255, mean = std = 0.5
    SiglipImageProcessor(size={"height": 448, "width": 448}, resample=2, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3).save_pretrained(d)
    _bert_tokenizer(d)
    return d


def test_clip_contract(clip_dir):
    from ragmed.encoders import create_encoder

    img = create_encoder("clip", role="image", path=str(clip_dir))
    txt = create_encoder("clip", role="text", path=str(clip_dir))
    assert img.dim == 24 and img.id.startswith("clip:")
    _contract(img, txt, 24)


def test_siglip_448_contract_and_preprocessing(siglip_dir):
    from PIL import Image

    from ragmed.encoders import create_encoder

    img = create_encoder("siglip", role="image", path=str(siglip_dir))
    txt = create_encoder("siglip", role="text", path=str(siglip_dir))
    assert img.backend.image_size == 448
    _contract(img, txt, 32)
    a = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    x = img.backend.preprocess(Image.fromarray(a)).numpy()
    assert x.shape == (3, 448, 448)
    ref = np.asarray(Image.fromarray(a).resize((448, 448), Image.BILINEAR), dtype=np.float32) / 255.0
    np.testing.assert_allclose(x, ((ref - 0.5) / 0.5).transpose(2, 0, 1), atol=0.02)  # squashed, not cropped
    tok = img.backend.tokenizer(["a chest x ray"], padding="max_length", max_length=img.backend.max_length)
    assert len(tok["input_ids"][0]) == 64 and img.backend.pad_max


def test_wrong_family_and_missing_dir(clip_dir, tmp_path):
    from ragmed.encoders import create_encoder
    from ragmed.errors import ConfigError, ModelNotFoundError

    with pytest.raises(ConfigError, match="use the clip loader"):
        create_encoder("siglip", role="image", path=str(clip_dir))
    with pytest.raises(ModelNotFoundError) as e:
        create_encoder("siglip", role="image", path=str(tmp_path / "medsiglip-448"))
    assert "medsiglip-448" in str(e.value) and "google/medsiglip-448" in str(e.value)
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        create_encoder("clip", role="text", path=str(tmp_path / "notamodel"))


# --- MedImageInsight -----------------------------------------------------------------------------------------------
MII_CONFIG = """
IMAGE_ENCODER:
  NAME: davit_v1
  IMAGE_SIZE: [480, 480]
  IMAGE_MEAN: [0.485, 0.456, 0.406]
  IMAGE_STD: [0.229, 0.224, 0.225]
LANG_ENCODER:
  NAME: transformer
  TOKENIZER: clip
  CONTEXT_LENGTH: 77
UNICL_MODEL:
  DIM_PROJECTION: 1024
AUG:
  INTERPOLATION: 'bicubic'
TEST:
  CENTER_CROP: false
"""


def _mii_layout(root):
    d = root / "2024.09.27"
    (d / "vision_model").mkdir(parents=True)
    (d / "language_model" / "clip_tokenizer_4.16.2").mkdir(parents=True)
    (d / "config.yaml").write_text(MII_CONFIG)
    (d / "vision_model" / "medimageinsigt-v1.0.0.pt").write_bytes(b"placeholder: layout test only")
    (d / "language_model" / "language_model.pth").write_bytes(b"placeholder: layout test only")
    return d


def test_medimageinsight_layout_and_preprocessing(tmp_path):
    from PIL import Image

    from ragmed.encoders.clip import detect_medimageinsight, medimageinsight_preprocess

    d = _mii_layout(tmp_path)
    spec = detect_medimageinsight(str(tmp_path))  # the repository root: finds the dated folder
    assert spec["root"] == d and spec["vision"].name == "medimageinsigt-v1.0.0.pt"
    assert spec["image_size"] == [480, 480] and spec["dim"] == 1024 and spec["context_length"] == 77
    a = (np.random.default_rng(1).random((200, 320, 3)) * 255).astype(np.uint8)
    x = medimageinsight_preprocess(Image.fromarray(a), spec)
    assert x.shape == (3, 480, 480) and x.dtype == np.float32
    ref = np.asarray(Image.fromarray(a).resize((480, 480), Image.BICUBIC), dtype=np.float32) / 255.0
    ref = (ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x, ref.transpose(2, 0, 1), atol=1e-5)
    g = medimageinsight_preprocess(Image.fromarray(a[..., 0]), spec)  # grayscale → RGB replicated
    np.testing.assert_allclose(g[0] * 0.229 + 0.485, g[1] * 0.224 + 0.456, atol=1e-5)


def test_medimageinsight_errors(tmp_path):
    import importlib.util

    from ragmed.encoders import create_encoder
    from ragmed.errors import EncoderError, ModelNotFoundError

    (tmp_path / "half" / "vision_model").mkdir(parents=True)
    (tmp_path / "half" / "config.yaml").write_text(MII_CONFIG)
    with pytest.raises(ModelNotFoundError) as e:
        create_encoder("medimageinsight", role="image", path=str(tmp_path / "half"))
    assert "vision_model/*.pt" in str(e.value) and "language_model.pth" in str(e.value)
    assert "lion-ai/MedImageInsights" in str(e.value)
    if importlib.util.find_spec("medimageinsightmodel") or importlib.util.find_spec("MedImageInsights"):
        pytest.skip("a MedImageInsight package is installed here; the not-installed error cannot be shown")
    d = _mii_layout(tmp_path / "full")
    with pytest.raises(EncoderError) as e:
        create_encoder("medimageinsight", role="image", path=str(d))
    assert "not installed" in str(e.value) and "pip install medimageinsights" in str(e.value)
    assert "PYTHONPATH" in str(e.value)


def test_registry_lists_every_loader():
    from ragmed.encoders import encoder_kind, list_encoders

    for name in ("biomedclip", "unimed-clip", "siglip", "clip", "medimageinsight"):
        assert encoder_kind(name) == "both"
    assert {"ragmed-default", "classic"} <= set(list_encoders("image"))
    assert "minilm" in list_encoders("text") and "siglip" in list_encoders("text")
