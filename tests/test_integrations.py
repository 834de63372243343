"""LangChain and LlamaIndex retrievers over a real ragmed index."""
from __future__ import annotations

import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.index import build_index
from ragmed.pipeline import Pipeline
from tests.corpus_utils import png_corpus


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, text_encoder):
    root = tmp_path_factory.mktemp("integ")
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "classic"}}})
    build_index(read_corpus(png_corpus(root / "c", 8)), root / "idx", cfg, text_encoder=text_encoder, progress=False)
    p = Pipeline.from_components(cfg, root / "idx", text_encoder=text_encoder)
    return p


def test_langchain_retriever(pipeline):
    from ragmed.integrations.langchain import RagmedRetriever

    docs = RagmedRetriever(pipeline=pipeline, k=3).invoke("left apical pneumothorax")
    assert len(docs) == 3
    assert "pneumothorax" in docs[0].page_content.lower()
    assert docs[0].metadata["case_id"] == docs[0].id and "question-report" in docs[0].metadata["channels"]
    assert docs[0].metadata["meta_label"] == "ptx"


def test_llamaindex_retriever(pipeline):
    from ragmed.integrations.llamaindex import RagmedRetriever

    nodes = RagmedRetriever(pipeline, k=2).retrieve("cardiomegaly and vascular congestion")
    assert len(nodes) == 2 and nodes[0].score >= nodes[1].score
    assert "cardiomegaly" in nodes[0].node.get_content().lower()
    assert nodes[0].node.metadata["meta_label"] == "chf"
