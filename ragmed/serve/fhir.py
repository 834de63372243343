"""An answer as FHIR R4B resources (validated with ``fhir.resources``): a DiagnosticReport whose conclusion is the
answer, or a GuidanceResponse (the CDS Hooks / decision-support view) that holds one.

- ``DiagnosticReport``: ``status`` preliminary (machine output, for a clinician to review), ``code`` LOINC 18748-4
  (diagnostic imaging study), ``conclusion`` the answer text, ``imagingStudy`` the study asked about (when known),
  ``presentedForm`` the answer with its cited evidence as markdown, and ``contained`` resources: a DocumentReference per
  evidence case (case id, score, excerpt, thumbnail link) and a Device per model (text encoder, image encoder,
  generator, knowledge graph), referenced from extensions.
- ``GuidanceResponse``: ``status`` success (or data-required), ``moduleUri`` the CDS service, ``note`` the answer,
  ``reasonReference`` the contained DiagnosticReport and evidence.
"""
from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

EXT_EVIDENCE = "https://ragmed.dev/fhir/StructureDefinition/evidence"
EXT_MODEL = "https://ragmed.dev/fhir/StructureDefinition/generated-by"
EXT_INSUFFICIENT = "https://ragmed.dev/fhir/StructureDefinition/insufficient-evidence"
LOINC_IMAGING = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def evidence_markdown(answer: dict[str, Any], *, base_url: str = "", limit: int | None = None) -> str:
    """The answer and its cited evidence as markdown (used in the report's presentedForm and in CDS cards)."""
    lines = [answer.get("answer", "").strip(), ""]
    ev = answer.get("evidence", [])[: limit or None]
    if ev:
        lines.append("**Evidence**")
        for e in ev:
            score = e.get("similarity") if e.get("similarity") is not None else e.get("score")
            excerpt = " ".join((e.get("excerpt") or "").split())[:240]
            link = f" ([image]({base_url}{e['thumbnail']}))" if e.get("thumbnail") and base_url else ""
            lines.append(f"- {e.get('ref', '')} case `{e['case_id']}` (score {float(score or 0):.3f}){link}: "
                         f"{_md_escape(excerpt)}")
    kn = answer.get("knowledge", [])
    if kn:
        lines += ["", "**Knowledge**"]
        lines += [f"- {k.get('ref', '')} {_md_escape(k.get('name', ''))} ({k.get('concept_id', '')})" for k in kn]
    lines += ["", f"_{answer.get('intended_use', '')}_"]
    return "\n".join(lines).strip()


def _md_escape(text: str) -> str:
    for ch in "\\`*_[]<>":
        text = text.replace(ch, "\\" + ch)
    return text


def _models(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"resourceType": "Device", "id": f"model-{i}", "deviceName": [{"name": str(name), "type": "model-name"}],
             "type": {"text": role.replace("_", " ")}}
            for i, (role, name) in enumerate(sorted(answer.get("models", {}).items()), start=1)]


def _evidence_docs(answer: dict[str, Any], base_url: str) -> list[dict[str, Any]]:
    docs = []
    for i, e in enumerate(answer.get("evidence", []), start=1):
        att: dict[str, Any] = {"contentType": "text/plain", "title": f"{e.get('ref', '')} case {e['case_id']}",
                               "data": base64.b64encode((e.get("excerpt") or "").encode()).decode()}
        doc = {"resourceType": "DocumentReference", "id": f"evidence-{i}", "status": "current",
               "description": f"{e.get('ref', '')} case {e['case_id']} score {float(e.get('score') or 0):.4f}",
               "content": [{"attachment": att}]}
        if e.get("thumbnail"):
            doc["content"].append({"attachment": {"contentType": "image/png", "url": base_url + e["thumbnail"],
                                                  "title": "evidence image thumbnail"}})
        docs.append(doc)
    return docs


def diagnostic_report(answer: dict[str, Any], *, study_uid: str | None = None, imaging_study_ref: str | None = None,
                      patient_ref: str | None = None, base_url: str = "", index_version: str | None = None,
                      validate: bool = True) -> dict[str, Any]:
    """A FHIR R4B DiagnosticReport (JSON dict) for ``answer`` (``Answer.to_dict()`` as the service returns it)."""
    contained = _evidence_docs(answer, base_url) + _models(answer)
    ext = [{"url": EXT_EVIDENCE, "valueReference": {"reference": f"#{d['id']}"}}
           for d in contained if d["resourceType"] == "DocumentReference"]
    ext += [{"url": EXT_MODEL, "valueReference": {"reference": f"#{d['id']}"}}
            for d in contained if d["resourceType"] == "Device"]
    ext.append({"url": EXT_INSUFFICIENT, "valueBoolean": bool(answer.get("insufficient_evidence"))})
    md = evidence_markdown(answer, base_url=base_url)
    res: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "meta": {"tag": [{"system": "https://ragmed.dev/fhir/tags", "code": "decision-support",
                          "display": "machine-generated decision support; not a diagnosis"}]},
        "contained": contained,
        "extension": ext,
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [LOINC_IMAGING], "text": answer.get("question") or "imaging decision support"},
        "issued": _now(),
        "conclusion": answer.get("answer", ""),
        "presentedForm": [{"contentType": "text/markdown", "language": "en", "title": "ragmed answer with evidence",
                           "data": base64.b64encode(md.encode()).decode()}],
    }
    if index_version:
        res["identifier"] = [{"system": "https://ragmed.dev/fhir/index-version", "value": index_version}]
    if imaging_study_ref:
        res["imagingStudy"] = [{"reference": imaging_study_ref}]
    elif study_uid:
        res["imagingStudy"] = [{"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
                                "type": "ImagingStudy"}]
    if patient_ref:
        res["subject"] = {"reference": patient_ref}
    return validated(res) if validate else res


def guidance_response(answer: dict[str, Any] | None, *, service_uri: str, request_id: str,
                      status: str = "success", study_uid: str | None = None, imaging_study_ref: str | None = None,
                      patient_ref: str | None = None, base_url: str = "", message: str | None = None,
                      validate: bool = True) -> dict[str, Any]:
    """A FHIR R4B GuidanceResponse: the answer as a note, with the DiagnosticReport and evidence as reasons.
    ``answer`` None gives a ``data-required`` / ``failure`` response carrying ``message``."""
    res: dict[str, Any] = {"resourceType": "GuidanceResponse", "id": str(uuid.uuid4()),
                           "requestIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{request_id}"}
                           if _is_uuid(request_id) else {"value": request_id},
                           "moduleUri": service_uri, "status": status, "occurrenceDateTime": _now()}
    if patient_ref:
        res["subject"] = {"reference": patient_ref}
    if answer is not None:
        report = diagnostic_report(answer, study_uid=study_uid, imaging_study_ref=imaging_study_ref,
                                   patient_ref=patient_ref, base_url=base_url, validate=False)
        report["id"] = "report"
        inner = report.pop("contained")
        report["extension"] = [x for x in report["extension"] if x["url"] == EXT_INSUFFICIENT]
        res["contained"] = [report] + inner
        res["reasonReference"] = [{"reference": "#report"}] + [
            {"reference": f"#{d['id']}"} for d in inner if d["resourceType"] == "DocumentReference"]
        res["note"] = [{"text": answer.get("answer", "")}]
    elif message:
        res["note"] = [{"text": message}]
    return validated(res) if validate else res


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
        return True
    except (ValueError, TypeError):
        return False


def validated(res: dict[str, Any]) -> dict[str, Any]:
    """Parse ``res`` with fhir.resources' R4B model of its type (raises on an invalid resource) and return the
    model's own JSON form."""
    import json

    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(res["resourceType"]).model_validate(res)
    return json.loads(model.model_dump_json(exclude_none=True))
