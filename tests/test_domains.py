"""The domain router: DICOM tags, content checks, the fitted classifier, zero-shot plumbing, threshold behaviour."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ragmed.errors import ConfigError, DomainError
from tests.conftest import data_path
from tests.multidomain_utils import make_nonmedical, multidomain_config, pick_images, write_corpus


@pytest.fixture(scope="module")
def md_index(tmp_path_factory, text_encoder):
    """A real multi-domain index: 12 real images per domain (pathology, dermatology, MRI, microscopy)."""
    from ragmed.corpus import read_corpus
    from ragmed.pipeline.build import build_from_config

    data = data_path()
    tmp = tmp_path_factory.mktemp("md")
    manifest = write_corpus(data, tmp, 12)
    cfg = multidomain_config()
    report = build_from_config(read_corpus(manifest), tmp / "index", cfg, progress=False, text_encoder=text_encoder)
    return tmp / "index", cfg, report


@pytest.fixture(scope="module")
def router(md_index):
    from ragmed.pipeline import Pipeline

    index, cfg, _ = md_index
    return Pipeline(cfg, index=index).router


def _load(p):
    from ragmed.io import load_image

    return load_image(p)


# --- DICOM tags -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, domain, conf", [("RG1_J2KI", "chest-xray", 1.0), ("MG1_J2KI", "mammography", 1.0),
                                                ("RG2_J2KI", "xray", 0.9), ("CT1_J2KI", "ct", 0.9),
                                                ("MR2_J2KI", "mri", 0.9), ("US1_J2KI", "ultrasound", 0.9)])
def test_tags_route_real_dicom(name, domain, conf):
    from ragmed.domains import build_router

    img = _load(data_path("dicom", "J2KI", name))
    r = build_router(multidomain_config()).route(img)
    assert (r.domain, r.method) == (domain, "tags")
    assert r.confidence == pytest.approx(conf)
    assert f"Modality={img.modality}" in r.reason
    d, c, why = r  # unpacks as (domain, confidence, reason)
    assert d == domain and c == r.confidence and why == r.reason


@pytest.mark.parametrize("name, modality", [("NM1_J2KI", "NM"), ("XA1_J2KI", "XA")])
def test_tags_refuse_modality_of_no_domain(name, modality):
    from ragmed.domains import build_router

    with pytest.raises(DomainError, match=f"Modality={modality}.*fits none of the configured domains"):
        build_router(multidomain_config()).route(_load(data_path("dicom", "J2KI", name)))


def test_unknown_modality_can_search_everything():
    from ragmed.domains import build_router

    cfg = multidomain_config()
    cfg.router.params = {"unknown_modality": "search-all"}
    r = build_router(cfg).route(_load(data_path("dicom", "J2KI", "NM1_J2KI")))
    assert r.domain is None and r.confidence == 0.0 and "searching every domain" in r.reason


def test_router_config_errors():
    from ragmed.domains import build_router

    cfg = multidomain_config()
    cfg.router.params = {"order": ["tags", "astrology"]}
    with pytest.raises(ConfigError, match="astrology"):
        build_router(cfg)
    cfg.router.params = {"nonsense": 1}
    with pytest.raises(ConfigError, match="nonsense"):
        build_router(cfg)
    cfg = multidomain_config()
    cfg.domains = cfg.domains[:1] + cfg.domains[:1]
    with pytest.raises(ConfigError, match="duplicate"):
        build_router(cfg)


# --- content checks ------------------------------------------------------------------------------------------
def test_non_medical_images_refused(tmp_path, router):
    expected = {"random-noise": "random noise", "blank-frame": "blank frame", "text-document": "text document",
                "natural-photo": "natural-colour photograph"}
    for kind, path in make_nonmedical(tmp_path).items():
        with pytest.raises(DomainError, match=expected[kind]) as ei:
            router.route(_load(path))
        assert str(path.name) in str(ei.value)  # names the file


def test_real_medical_images_pass_content_checks():
    from ragmed.domains import check_content

    data = data_path()
    for dom in ("pathology", "dermatology", "mri", "microscopy"):
        for p in pick_images(data, dom, 10, offset=200):
            check_content(_load(p))  # raises on refusal
    for p in sorted((data / "images" / "pocus-lus" / "images").glob("*.jpg"))[:10]:
        check_content(_load(p))


# --- the classifier fitted at build time ---------------------------------------------------------------------
def test_classifier_saved_safely_and_routes_held_out_images(md_index, router):
    index, cfg, report = md_index
    from ragmed.index.store import resolve_version_dir

    vd = resolve_version_dir(index)
    info = json.loads((vd / "router.json").read_text())
    assert sorted(info["classes"]) == ["dermatology", "microscopy", "mri", "pathology"]
    with np.load(vd / "router.npz", allow_pickle=False) as z:
        assert z["coef"].shape[0] == 4
    assert report.post_build["router"]["fitted"] is True
    data = data_path()
    right = total = 0
    for dom in ("pathology", "dermatology", "mri", "microscopy"):
        for p in pick_images(data, dom, 6, offset=100):  # not among the 12 indexed per domain
            r = router.route(_load(p))
            assert r.method == "classifier" and 0 <= r.confidence <= 1
            assert abs(sum(r.scores.values()) - 1) < 1e-4
            right += (r.domain or r.best) == dom
            total += 1
    assert right / total >= 0.8, f"{right}/{total} held-out images routed to their domain"


def test_classifier_refuses_far_out_of_distribution_features(md_index, router):
    """The fitted distance limit (not the content heuristics): an image whose features are far from every domain."""
    from ragmed.domains import content_features

    clf = router.classifier
    img = _load(pick_images(data_path(), "mri", 1, offset=300)[0])
    v = router.image_encoder.encode_images([img])[0]
    f = np.concatenate([v, content_features(img)])[None, :]
    assert clf.ood_score(f)[0] < clf.ood_floor
    far = clf.mean + 40 * clf.scale
    assert clf.ood_score(far[None, :])[0] > clf.ood_floor


def test_build_time_labels_assign_sub_indexes(md_index):
    from ragmed.index.store import IndexStore

    store = IndexStore(md_index[0])
    assert sorted(store.domains) == ["dermatology", "microscopy", "mri", "pathology"]
    rows = store.db.execute("SELECT domain, COUNT(*) FROM cases GROUP BY domain").fetchall()
    assert {r[0]: r[1] for r in rows} == {"dermatology": 12, "microscopy": 12, "mri": 12, "pathology": 12}


def test_below_threshold_searches_every_domain_merged_by_calibrated_score(md_index):
    from ragmed.pipeline import Pipeline

    index, cfg, _ = md_index
    cfg = cfg.model_copy(deep=True)
    cfg.router.threshold = 1.0  # nothing is that sure: every query goes to every domain
    pipe = Pipeline(cfg, index=index)
    img = pick_images(data_path(), "dermatology", 1, offset=150)[0]
    r = pipe.retrieve(img, "Is this a melanocytic nevus?", k=20)  # more than the 12 dermatology cases
    assert r.domain is None and "searching every domain" in r.route.reason
    assert sorted(r.domains_searched) == ["dermatology", "microscopy", "mri", "pathology"]
    assert len({e.domain for e in r.candidates}) > 1
    top = [e.domain for e in r.candidates[:5]]
    assert top.count("dermatology") >= 3  # merged by calibrated score: the image's own domain leads
    assert all(e.similarity is not None and 0 <= e.similarity <= 1 for e in r.candidates)
    # confident routing searches only the routed domain
    r2 = Pipeline(md_index[1], index=index).retrieve(img, "Is this a melanocytic nevus?")
    assert r2.domain is not None and r2.domain_confidence >= md_index[1].router.threshold
    assert r2.domains_searched == [r2.domain] and {e.domain for e in r2.candidates} == {r2.domain}


# --- zero-shot (plumbing with a FAKE shared-space encoder; the real one is measured in eval/router_eval.py) -------
class FakeColourTextSpaceEncoder:
    """FAKE image encoder for plumbing only: maps an image to the text vector of a colour word, in the text space."""

    def __init__(self, text_encoder):
        self.te, self.id, self.dim, self.space = text_encoder, "fake-colour-zero-shot", text_encoder.dim, text_encoder.space

    def encode_images(self, images):
        words = []
        for im in images:
            words.append("a dermoscopy photograph of a skin lesion or mole" if im.is_color
                         else "an MRI scan of the brain or body, magnetic resonance imaging")
        return self.te.encode_texts(words)


def test_zero_shot_step_uses_descriptions(text_encoder):
    from ragmed.domains import build_router

    cfg = multidomain_config()
    router = build_router(cfg, image_encoder=FakeColourTextSpaceEncoder(text_encoder), text_encoder=text_encoder)
    derm = _load(pick_images(data_path(), "dermatology", 1)[0])
    r = router.route(derm)
    assert r.method == "zero-shot" and r.domain == "dermatology" and r.confidence > 0.5
    mri = _load(pick_images(data_path(), "mri", 1)[0])
    assert router.route(mri).domain == "mri"
    # a non-medical description winning is a refusal
    router.negatives = ["a dermoscopy photograph of a skin lesion or mole"]
    router.domains = [d for d in router.domains if d.name != "dermatology"]
    router.names = [d.name for d in router.domains]
    router._desc_vecs = None
    with pytest.raises(DomainError, match="zero-shot"):
        router.route(derm)


def test_route_is_json_able(router):
    r = router.route(_load(pick_images(data_path(), "pathology", 1, offset=50)[0]))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["method"] == "classifier" and d["best"] in d["scores"] and d["domain"] in (None, d["best"])
    assert d["confidence"] == pytest.approx(r.confidence, abs=1e-4)
