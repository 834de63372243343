"""LangChain retriever over a ragmed pipeline."""
from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from ragmed.integrations import evidence_metadata


class RagmedRetriever(BaseRetriever):
    """``RagmedRetriever(pipeline=Pipeline.from_yaml(...), k=5, image=None).invoke("question")`` → Documents."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    pipeline: Any
    k: int = 5
    image: Any = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        r = self.pipeline.retrieve(self.image, query, k=self.k)
        return [Document(page_content=e.text, metadata=evidence_metadata(e), id=e.case_id) for e in r.candidates]
