"""The evidence viewer in a real headless browser (Debian's chromium, driven by playwright's Python API): the page
loads from the service alone (no request leaves it: no CDN), takes an image and a question, and shows the answer with
its citation marks, the evidence cases side by side with thumbnails rendered by the server, scores and report
excerpts, and the knowledge concepts. ``RAGMED_UPDATE_SCREENSHOT=1`` rewrites docs/viewer.png."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, data_path
from tests.serve_utils import API_KEY

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")

CORPUS = {  # real DICOM samples (pydicom / NEMA) with reports written for them
    "ct-chest": ("pydicom-test-files/CT_small.dcm", "FINDINGS: Axial CT. Small right pleural effusion with adjacent "
                 "atelectasis. IMPRESSION: Right pleural effusion."),
    "cr-chest": ("J2KI/RG1_J2KI", "FINDINGS: Frontal chest radiograph. Blunting of the right costophrenic angle, "
                 "consistent with a small pleural effusion. IMPRESSION: Small right effusion."),
    "cr-hip": ("J2KI/RG2_J2KI", "FINDINGS: Pelvis and hip radiograph. No fracture or dislocation. "
               "IMPRESSION: Normal hip."),
    "mr-head": ("pydicom-test-files/MR_small.dcm", "FINDINGS: MR of the head. No mass, haemorrhage or infarct. "
                "IMPRESSION: Normal brain MRI."),
    "ct-abdomen": ("series/dcmqi_ct3slice/01.dcm", "FINDINGS: Abdominal CT. Liver and kidneys unremarkable. "
                   "Trace pleural fluid at the lung bases. IMPRESSION: No acute abdominal finding."),
}


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium is not installed (run scripts/install_services.sh: apt package chromium)")
    return exe


@pytest.fixture(scope="module")
def server(tmp_path_factory, text_encoder):
    from ragmed.config import PipelineConfig
    from ragmed.corpus import read_corpus
    from ragmed.pipeline.build import build_from_config
    from ragmed.serve.process import start_server, stop_server
    from tests.corpus_utils import write_manifest

    chromium()
    data = data_path("dicom")
    d = tmp_path_factory.mktemp("viewer")
    corpus = d / "corpus"
    corpus.mkdir()
    rows = []
    for cid, (rel, report) in CORPUS.items():
        (corpus / f"{cid}.dcm").symlink_to(data / rel)
        rows.append({"id": cid, "image": f"{cid}.dcm", "report": report})
    manifest = write_manifest(corpus / "manifest.csv", rows)
    cfg = PipelineConfig.from_dict({"name": "viewer-test",
                                    "encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "generator": {"name": "extractive"},
                                    "select": {"name": "fixed", "params": {"k": 4}},
                                    "knowledge": {"path": str(REPO / "knowledge" / "open-default"),
                                                  "max_concepts": 3}})
    build_from_config(read_corpus(manifest), d / "idx", cfg, text_encoder=text_encoder, progress=False)
    proc, url = start_server("api", ["--index", str(d / "idx"), "--corpus-root", str(corpus)],
                             env={"RAGMED_API_KEYS": API_KEY}, timeout=240)
    yield url, data
    stop_server(proc)


def test_viewer_answers_with_evidence_in_a_real_browser(server, tmp_path):
    url, data = server
    requests, errors = [], []
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/viewer")
            assert page.title() == "ragmed · evidence viewer"
            # without the key the API answers 401 and the page says so
            page.fill("#question", "Is there a pleural effusion?")
            page.click("#ask")
            page.wait_for_selector("body[data-state=error]", timeout=30_000)
            assert "API key" in page.inner_text("#status")
            page.fill("#key", API_KEY)
            dt = page.evaluate_handle("() => { const dt = new DataTransfer(); dt.items.add(new File("
                                      "[new Uint8Array([137, 80, 78, 71])], 'dropped.png', {type: 'image/png'}));"
                                      " return dt; }")
            page.dispatch_event("#drop", "drop", {"dataTransfer": dt})  # drag and drop takes the file too
            assert "dropped.png" in page.inner_text("#drop-label")
            page.set_input_files("#image", str(data / "pydicom-test-files" / "CT_small.dcm"))
            page.click("#ask")
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            answer = page.inner_text("#answer")
            assert answer.strip() and page.locator("#answer .cite").count() >= 1
            cards = page.locator("#evidence .card")
            assert cards.count() >= 2
            assert page.locator("#evidence .card").first.get_attribute("data-case-id") == "ct-chest"
            widths = page.eval_on_selector_all("#evidence .card img", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == cards.count() and all(w > 0 for w in widths)  # thumbnails rendered by the server
            assert "score" in page.inner_text("#evidence .card >> nth=0")
            assert "effusion" in page.inner_text("#evidence").lower()  # report excerpts
            concepts = page.locator("#knowledge li").all_inner_texts()
            assert concepts and any("[K" in c for c in concepts), concepts
            assert ".dcm" not in page.inner_html("#result")  # no corpus file names in the results
            shot = REPO / "docs" / "viewer.png" if os.environ.get("RAGMED_UPDATE_SCREENSHOT") else \
                tmp_path / "viewer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()
    assert all(r.startswith(url) or r.startswith("blob:") for r in requests), requests  # nothing from a CDN
    assert not [e for e in errors if "401" not in e], errors
