"""Retrievers for LangChain and LlamaIndex over a ragmed index (same store, same fusion, same evidence fields).

``from ragmed.integrations.langchain import RagmedRetriever`` (needs ``langchain-core``) and
``from ragmed.integrations.llamaindex import RagmedRetriever`` (needs ``llama-index-core``); both take a
``ragmed.Pipeline`` and return the fused evidence as documents / nodes with the case id, scores per channel, domain,
modality and image source in their metadata. A query is text; pass ``image=`` at construction (or per call through
``pipeline.retrieve``) for image-conditioned retrieval.
"""
from __future__ import annotations

from typing import Any


def evidence_metadata(e) -> dict[str, Any]:
    return {"case_id": e.case_id, "score": e.score, "channels": dict(e.channels), "ranks": dict(e.ranks),
            "domain": e.domain, "modality": e.modality, "image": e.image, **{f"meta_{k}": v for k, v in e.metadata.items()}}
