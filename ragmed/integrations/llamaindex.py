"""LlamaIndex retriever over a ragmed pipeline."""
from __future__ import annotations

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ragmed.integrations import evidence_metadata


class RagmedRetriever(BaseRetriever):
    """``RagmedRetriever(pipeline, k=5, image=None).retrieve("question")`` → ``NodeWithScore`` list."""

    def __init__(self, pipeline, k: int = 5, image=None, **kwargs):
        super().__init__(**kwargs)
        self.pipeline, self.k, self.image = pipeline, k, image

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        r = self.pipeline.retrieve(self.image, query_bundle.query_str, k=self.k)
        return [NodeWithScore(node=TextNode(id_=e.case_id, text=e.text, metadata=evidence_metadata(e)), score=e.score)
                for e in r.candidates]
