"""CDS Hooks 2.0 (HL7): imaging decision support for an EHR.

- ``GET /cds-services``: discovery. Three services by default (``--cds-config`` replaces them): imaging evidence on
  ``order-select`` and ``order-sign`` (a draft ServiceRequest or ImagingStudy in ``context.draftOrders``) and on
  ``patient-view`` (the patient's latest ImagingStudy, from prefetch). Each asks the question configured for it; a
  request may ask its own with ``extension["ragmed-question"]``.
- ``POST /cds-services/{id}``: the call. The study's image is fetched from the PACS over WADO-RS (``--dicomweb``) by
  its StudyInstanceUID (the ImagingStudy's ``urn:dicom:uid`` identifier). Data the service needs comes from
  ``prefetch``, else from the request's ``fhirServer`` (with ``fhirAuthorization``); when neither yields it the answer
  is 412. Cards: ``summary`` under 140 characters, ``indicator``, ``source.label``, a markdown ``detail`` with the
  answer and its cited evidence, links to the evidence (signed, expiring thumbnail URLs) and the viewer; an info card
  that abstains when the evidence is insufficient.
- ``POST /cds-services/{id}/feedback``: card outcomes (accepted / overridden), counted in ``/metrics``.

Authentication as the specification says: every call carries ``Authorization: Bearer <JWT>`` signed by the EHR with
an asymmetric algorithm (RS/ES/PS 256/384/512, EdDSA) by a key in the configured JWKS; ``iss`` must be an accepted
issuer, ``aud`` this service's URL, ``exp`` at most five minutes ahead, ``iat`` not in the future, and each ``jti``
is accepted once (replays get 401). Requests and responses are validated against pydantic models of the
specification's shapes.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import Request  # at module level: the endpoints' annotations are resolved here
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragmed.errors import ConfigError, RagmedError

log = logging.getLogger("ragmed.serve.cds")

ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")
SPEC_VERSION = "2.0"


# --- the specification's shapes ---------------------------------------------------------------------------------
class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    subject: str


class CdsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _url(cls, v):
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("fhirServer must be an http(s) URL")
        return v


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: dict[str, Any] | None = None


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uuid: str | None = None
    summary: str = Field(min_length=1, max_length=139)  # "<140 characters"
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[dict[str, Any]] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[dict[str, Any]] | None = None
    links: list[Link] | None = None


class CdsResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cards: list[Card]
    systemActions: list[dict[str, Any]] | None = None


class ServiceDescription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[dict[str, Any]] | None = None
    overrideReason: dict[str, Any] | None = None
    outcomeTimestamp: str


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: list[FeedbackItem] = Field(min_length=1)


# --- configuration ----------------------------------------------------------------------------------------------
STUDIES_PREFETCH = "ImagingStudy?patient={{context.patientId}}&_sort=-started&_count=5"


@dataclass
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    question: str
    prefetch: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        d = {"hook": self.hook, "title": self.title, "description": self.description, "id": self.id}
        if self.prefetch:
            d["prefetch"] = self.prefetch
        return ServiceDescription(**d).model_dump(exclude_none=True)


DEFAULT_SERVICES = (
    CdsService("ragmed-imaging-order-select", "order-select", "ragmed imaging evidence",
               "Similar prior cases, their reports and knowledge for the imaging study of a draft order.",
               "What abnormality is seen?", {"studies": STUDIES_PREFETCH}),
    CdsService("ragmed-imaging-order-sign", "order-sign", "ragmed imaging evidence at signing",
               "Cited evidence for the study behind an imaging order that is being signed.",
               "What abnormality is seen?", {"studies": STUDIES_PREFETCH}),
    CdsService("ragmed-imaging-patient-view", "patient-view", "ragmed: latest imaging study",
               "Evidence-based summary of the patient's most recent imaging study.",
               "What abnormality is seen?", {"studies": STUDIES_PREFETCH}),
)


@dataclass
class CdsSettings:
    jwks: dict[str, Any]
    issuers: tuple[str, ...]
    audience: str | None = None
    services: tuple[CdsService, ...] = DEFAULT_SERVICES
    max_token_lifetime_s: int = 300
    leeway_s: int = 30
    fhir_timeout_s: float = 10.0
    link_ttl_s: int = 3600

    def __post_init__(self):
        if not self.issuers:
            raise ConfigError("CDS Hooks needs at least one accepted JWT issuer (--cds-issuer)")
        keys = self.jwks.get("keys") if isinstance(self.jwks, dict) else None
        if not keys:
            raise ConfigError("the CDS JWKS holds no keys")
        import jwt

        try:
            self.keyset = jwt.PyJWKSet.from_dict(self.jwks)
        except jwt.PyJWTError as e:
            raise ConfigError(f"invalid CDS JWKS: {e}") from None
        for k in self.keyset.keys:
            if k.key_type == "oct":
                raise ConfigError("the CDS JWKS holds a symmetric key; CDS Hooks needs the EHR's public keys")
        self.seen: dict[str, float] = {}
        self.seen_lock = threading.Lock()
        self.issued: dict[str, float] = {}  # card uuid -> time issued (for feedback)

    @classmethod
    def load(cls, *, jwks: str | Path, issuers, audience: str | None = None,
             config: str | Path | None = None) -> "CdsSettings":
        try:
            jw = json.loads(Path(jwks).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the JWKS: {e}", path=str(jwks)) from None
        services = DEFAULT_SERVICES
        if config:
            import yaml

            raw = yaml.safe_load(Path(config).read_text()) or {}
            services = tuple(CdsService(**s) for s in raw.get("services", []))
            if not services:
                raise ConfigError("the CDS config lists no services", path=str(config))
        return cls(jwks=jw, issuers=tuple(issuers), audience=audience, services=services)

    # --- JWT --------------------------------------------------------------------------------------------------
    def verify(self, authorization: str | None, url: str) -> dict[str, Any]:
        import jwt

        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing bearer JWT")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed JWT") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC:
            raise AuthError(f"JWT algorithm {alg!r} is not accepted (asymmetric algorithms only)")
        kid = header.get("kid")
        candidates = [k for k in self.keyset.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise AuthError("JWT key id not in the configured JWKS")
        audiences = [url] + ([self.audience, self.audience.rstrip("/") + "/" + url.split("/", 3)[-1]]
                             if self.audience else [])
        last = None
        for k in candidates:
            try:
                claims = jwt.decode(token, key=k.key, algorithms=[alg], audience=audiences, issuer=list(self.issuers),
                                    leeway=self.leeway_s, options={"require": ["iss", "aud", "exp", "iat", "jti"]})
                break
            except jwt.InvalidSignatureError as e:
                last = e
            except jwt.PyJWTError as e:
                raise AuthError(f"JWT rejected: {e}") from None
        else:
            raise AuthError(f"JWT rejected: {last}") from None
        now = time.time()
        if claims["exp"] > now + self.max_token_lifetime_s + self.leeway_s:
            raise AuthError("JWT expires too far in the future (at most five minutes)")
        if claims["iat"] > now + self.leeway_s:
            raise AuthError("JWT issued in the future")
        with self.seen_lock:
            for j, exp in list(self.seen.items()):
                if exp < now - self.leeway_s:
                    del self.seen[j]
            key = f"{claims['iss']}\0{claims['jti']}"
            if key in self.seen:
                raise AuthError("JWT replayed (jti already used)")
            self.seen[key] = float(claims["exp"])
        return claims


class AuthError(RagmedError):
    stage = "serve"


class DataMissing(RagmedError):
    """Neither prefetch nor the FHIR server yields the data a service needs (412)."""

    stage = "serve"


# --- FHIR access ----------------------------------------------------------------------------------------------
def expand(template: str, context: dict[str, Any]) -> str:
    out = template
    for k, v in context.items():
        if isinstance(v, (str, int)):
            out = out.replace("{{context.%s}}" % k, quote(str(v), safe=""))
    if "{{" in out:
        raise DataMissing(f"prefetch template needs context the request does not carry: {template}")
    return out


def fhir_get(req: CdsRequest, query: str, timeout: float) -> dict[str, Any]:
    import httpx

    if not req.fhirServer:
        raise DataMissing("prefetch data missing and no fhirServer to fetch it from")
    headers = {"Accept": "application/fhir+json"}
    if req.fhirAuthorization is not None:
        headers["Authorization"] = f"Bearer {req.fhirAuthorization.access_token}"
    url = req.fhirServer.rstrip("/") + "/" + query
    try:
        r = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise DataMissing(f"the FHIR server cannot be reached ({type(e).__name__})") from None
    if r.status_code in (401, 403):
        raise DataMissing(f"the FHIR server refused access (HTTP {r.status_code})")
    if r.status_code != 200:
        raise DataMissing(f"the FHIR server answered HTTP {r.status_code}")
    if len(r.content) > 10 << 20:
        raise DataMissing("the FHIR server's answer is too large")
    try:
        return r.json()
    except ValueError:
        raise DataMissing("the FHIR server's answer is not JSON") from None


def _resources(bundle_or_resource: Any, rtype: str) -> list[dict[str, Any]]:
    if not isinstance(bundle_or_resource, dict):
        return []
    if bundle_or_resource.get("resourceType") == rtype:
        return [bundle_or_resource]
    if bundle_or_resource.get("resourceType") == "Bundle":
        return [e["resource"] for e in bundle_or_resource.get("entry", []) or []
                if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == rtype]
    return []


def study_uid_of(study: dict[str, Any]) -> str | None:
    """The StudyInstanceUID of an ImagingStudy (its ``urn:dicom:uid`` identifier), validated by fhir.resources."""
    from fhir.resources.R4B.imagingstudy import ImagingStudy

    try:
        model = ImagingStudy.model_validate(study)
    except Exception:  # noqa: BLE001 - an invalid resource is treated as absent
        return None
    for ident in model.identifier or []:
        if ident.system == "urn:dicom:uid" and ident.value:
            return ident.value.removeprefix("urn:oid:")
    return None


def _started(s: dict[str, Any]) -> str:
    return str(s.get("started") or "")


# --- the service ----------------------------------------------------------------------------------------------
def mount_cds(app, cds: CdsSettings) -> None:
    from fastapi.responses import JSONResponse

    services = {s.id: s for s in cds.services}
    state = app.state
    error = state.error
    metrics = state.metrics

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def authenticate(request: Request):
        try:
            return cds.verify(request.headers.get("authorization"), str(request.url).split("?")[0])
        except AuthError as e:
            return error(401, "authentication_error", str(e), headers={"WWW-Authenticate": "Bearer"})

    @app.get("/cds-services", tags=["CDS Hooks"], summary="CDS Hooks discovery")
    def discovery():
        return {"services": [s.describe() for s in cds.services]}

    @app.post("/cds-services/{service_id}", tags=["CDS Hooks"], summary="Call a CDS service",
              responses={401: {"description": "JWT missing or rejected"}, 404: {"description": "unknown service"},
                         412: {"description": "prefetch missing and FHIR server unavailable"}})
    async def call(service_id: str, request: Request):
        svc = services.get(service_id)
        if svc is None:
            return error(404, "not_found", "unknown CDS service")
        auth = await authenticate(request)
        if isinstance(auth, JSONResponse):
            return auth
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error(400, "invalid_request", "the body is not JSON")
        try:
            req = CdsRequest.model_validate(body)
        except Exception as e:  # noqa: BLE001 - pydantic's ValidationError
            first = e.errors()[0] if hasattr(e, "errors") and e.errors() else {}
            loc = ".".join(str(x) for x in first.get("loc", ()))
            return error(400, "invalid_request", f"{loc}: {first.get('msg', 'invalid CDS request')}")
        if req.hook != svc.hook:
            return error(400, "invalid_request", f"this service answers the {svc.hook} hook, not {req.hook}")
        base = base_url(request)
        return await state.queue.run(work, svc, req, base)

    def work(svc: CdsService, req: CdsRequest, base: str):
        from ragmed.api import QuestionError, validate_question

        try:
            target = find_target(svc, req)
        except DataMissing as e:
            return error(412, "prefetch_missing", str(e))
        if target is None:
            return CdsResponse(cards=[]).model_dump(exclude_none=True)
        study_uid, reason = target
        question = svc.question
        ext_q = (req.extension or {}).get("ragmed-question")
        if isinstance(ext_q, str) and ext_q.strip():
            question = ext_q
        if reason:
            question = f"{question} Indication: {reason}"
        try:
            question = validate_question(question, max_chars=state.settings.max_question_chars)
        except QuestionError as e:
            return error(400, "invalid_question", str(e))
        if study_uid is not None and not state.settings.dicomweb_url:
            return respond([abstain_card("ragmed: no PACS configured, so no image evidence for this study", base,
                                         "The service was started without --dicomweb; it cannot fetch the study.")])
        if study_uid is None:
            res = state.run_request(None, None, None, None,
                                    lambda p, img, ref: state.answer_body(p, p.ask(None, question), None, "json"))
        else:
            res = state.run_request(None, study_uid, None, None,
                                    lambda p, img, ref: state.answer_body(p, p.ask(img, question), ref, "json"))
        if isinstance(res, JSONResponse):
            if res.status_code in (404, 502):  # the study is not in the PACS / the PACS is down: say so on a card
                msg = json.loads(res.body)["error"]["message"]
                return respond([abstain_card(f"ragmed: study images unavailable ({msg})"[:139], base,
                                             "ragmed could not fetch the study's images from the PACS, so it "
                                             "offers no evidence for this order.")])
            return res
        return respond(cards_for(res, base))

    def respond(cards: list[dict[str, Any]]):
        out = CdsResponse.model_validate({"cards": cards}).model_dump(exclude_none=True)
        now = time.time()
        for c in out["cards"]:
            cds.issued[c["uuid"]] = now
        if len(cds.issued) > 10000:
            for k in sorted(cds.issued, key=cds.issued.get)[:5000]:
                del cds.issued[k]
        return out

    def find_target(svc: CdsService, req: CdsRequest) -> tuple[str | None, str] | None:
        """(StudyInstanceUID or None, indication text) for the call; None when the call is not about imaging."""
        ctx = req.context
        if svc.hook in ("order-select", "order-sign"):
            orders = ctx.get("draftOrders")
            if not isinstance(orders, dict):
                raise DataMissing("context.draftOrders is missing")
            selections = set(ctx.get("selections") or [])
            studies = _resources(orders, "ImagingStudy")
            requests = [r for r in _resources(orders, "ServiceRequest")
                        if not selections or f"ServiceRequest/{r.get('id')}" in selections]
            for s in studies:
                uid = study_uid_of(s)
                if uid:
                    return uid, ""
            imaging = [r for r in requests if _is_imaging(r)]
            if not imaging:
                return None
            reason = _reason_text(imaging[0])
            uid = latest_study_uid(svc, req, required=False)
            return uid, reason
        if svc.hook == "patient-view":
            uid = latest_study_uid(svc, req, required=True)
            return uid, ""
        return None

    def latest_study_uid(svc: CdsService, req: CdsRequest, *, required: bool) -> str | None:
        data = (req.prefetch or {}).get("studies")
        if data is None and "studies" in svc.prefetch:
            try:
                data = fhir_get(req, expand(svc.prefetch["studies"], req.context), cds.fhir_timeout_s)
            except DataMissing:
                if required:
                    raise
                return None
        studies = sorted(_resources(data, "ImagingStudy"), key=_started, reverse=True)
        for s in studies:
            uid = study_uid_of(s)
            if uid:
                return uid
        if required:
            raise DataMissing("no ImagingStudy with a DICOM Study Instance UID for this patient")
        return None

    def cards_for(answer: dict[str, Any], base: str) -> list[dict[str, Any]]:
        from ragmed.serve.fhir import evidence_markdown

        links = []
        for e in answer.get("evidence", [])[:5]:
            if e.get("thumbnail"):
                links.append({"label": f"Evidence {e.get('ref', '')} case {e['case_id']}"[:80],
                              "url": base + state.sign(e["thumbnail"], cds.link_ttl_s), "type": "absolute"})
        links.append({"label": "Open the ragmed evidence viewer", "url": base + "/viewer", "type": "absolute"})
        source = {"label": "ragmed (retrieval-augmented evidence)", "url": base + "/viewer",
                  "topic": {"system": "https://ragmed.dev/cds", "code": "imaging-evidence",
                            "display": "Imaging evidence"}}
        if answer.get("insufficient_evidence"):
            return [abstain_card("ragmed abstains: the evidence is insufficient for a suggestion", base,
                                 evidence_markdown(answer, base_url=""), links)]
        first = answer["answer"].split(". ")[0].strip()
        summary = "ragmed: " + first
        if len(summary) > 139:
            summary = summary[:136].rstrip() + "…"
        return [{"uuid": str(uuid.uuid4()), "summary": summary, "indicator": "info", "source": source,
                 "detail": evidence_markdown(answer, base_url=""), "links": links}]

    def abstain_card(summary: str, base: str, detail: str, links: list | None = None) -> dict[str, Any]:
        return {"uuid": str(uuid.uuid4()), "summary": summary[:139], "indicator": "info",
                "source": {"label": "ragmed (retrieval-augmented evidence)", "url": base + "/viewer"},
                "detail": detail, "links": links or None}

    @app.post("/cds-services/{service_id}/feedback", tags=["CDS Hooks"], summary="Feedback on cards",
              responses={401: {"description": "JWT missing or rejected"}})
    async def feedback(service_id: str, request: Request):
        if service_id not in services:
            return error(404, "not_found", "unknown CDS service")
        auth = await authenticate(request)
        if isinstance(auth, JSONResponse):
            return auth
        try:
            fb = Feedback.model_validate(await request.json())
        except Exception:  # noqa: BLE001
            return error(400, "invalid_request", "the body is not CDS Hooks feedback")
        unknown = [f.card for f in fb.feedback if f.card not in cds.issued]
        if unknown:
            return error(400, "invalid_request", "feedback for a card this service did not issue")
        for f in fb.feedback:
            metrics.feedback.labels(f.outcome).inc()
        log.info("cds feedback", extra={"fields": {"service": service_id, "n": len(fb.feedback)}})
        return JSONResponse({}, status_code=200)


def _is_imaging(sr: dict[str, Any]) -> bool:
    cats = json.dumps(sr.get("category", [])).lower() + json.dumps(sr.get("code", {})).lower()
    return any(w in cats for w in ("363679005", "imaging", "radiolog", "x-ray", "xray", "ct ", "mri", "ultrasound",
                                   "\"rad\""))


def _reason_text(sr: dict[str, Any]) -> str:
    parts = []
    for rc in sr.get("reasonCode", []) or []:
        if isinstance(rc, dict):
            parts.append(rc.get("text") or ", ".join(c.get("display", "") for c in rc.get("coding", []) or []))
    return "; ".join(p for p in parts if p)[:300]
