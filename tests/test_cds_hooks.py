"""CDS Hooks 2.0 against the real service on 127.0.0.1, over an index built from a real Orthanc (DICOMweb): discovery,
patient-view / order-select / order-sign calls that reference a study in the PACS and return cards, 412 when neither
prefetch nor the FHIR server yields the data, FHIR fetching from the request's ``fhirServer``, JWT authentication
(missing, expired, wrongly signed, symmetric, wrong audience / issuer, replayed), feedback, and a FHIR
GuidanceResponse.

The FHIR endpoint is ``FhirFixtureServer``: a TEST DOUBLE, not a FHIR server (no FHIR server installs from the
package registries here). It serves fixed FHIR R4B resources, each validated by ``fhir.resources`` first, and records
the requests it gets."""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import data_path
from tests.serve_utils import CT_SMALL_STUDY, fill_orthanc, pacs_index, start_orthanc

jwt = pytest.importorskip("jwt")
pytest.importorskip("cryptography")
pytest.importorskip("fhir.resources")
httpx = pytest.importorskip("httpx")

ISSUER = "https://ehr.example.org"
PATIENT = "pat-1"


def imaging_study(uid: str, started: str = "2024-01-02T10:00:00Z") -> dict:
    return {"resourceType": "ImagingStudy", "id": "is-" + uid[-6:], "status": "available",
            "subject": {"reference": f"Patient/{PATIENT}"}, "started": started,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]}


def bundle(*resources) -> dict:
    from fhir.resources.R4B.bundle import Bundle

    b = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
         "entry": [{"resource": r, "fullUrl": f"urn:uuid:{uuid.uuid4()}"} for r in resources]}
    Bundle.model_validate(b)  # fixtures are valid FHIR R4B
    return b


class FhirFixtureServer:
    """TEST DOUBLE for a FHIR server: answers ``GET /ImagingStudy?patient=ID`` from a dict of validated Bundles and
    records each request's path and Authorization header."""

    def __init__(self, studies_by_patient: dict[str, dict]):
        self.studies = studies_by_patient
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Authorization")))
                u = urlparse(self.path)
                q = parse_qs(u.query)
                if u.path.rstrip("/").endswith("/ImagingStudy") and q.get("patient"):
                    body = outer.studies.get(q["patient"][0], bundle())
                    data = json.dumps(body).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from cryptography.hazmat.primitives.asymmetric import ec

    rsa_priv, ec_priv = rsa_key(), ec.generate_private_key(ec.SECP384R1())
    jwks = {"keys": []}
    for kid, priv, alg in (("ehr-rsa", rsa_priv, "RS384"), ("ehr-ec", ec_priv, "ES384")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(priv.public_key()))
        jwk.update(kid=kid, alg=alg, use="sig")
        jwks["keys"].append(jwk)
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks))
    return {"rsa": rsa_priv, "ec": ec_priv, "jwks": path}


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys):
    from ragmed.serve.process import start_server, stop_server

    data = data_path()
    proc_o, dicomweb = start_orthanc(tmp_path_factory.mktemp("orthanc-cds"))
    fill_orthanc(dicomweb, data)
    idx, images, _ = pacs_index(tmp_path_factory, dicomweb)
    fhir = FhirFixtureServer({PATIENT: bundle(imaging_study(CT_SMALL_STUDY)), "pat-none": bundle()})
    try:
        proc, url = start_server("api", ["--index", str(idx), "--dicomweb", dicomweb, "--corpus-root", str(images),
                                         "--cds-jwks", str(keys["jwks"]), "--cds-issuer", ISSUER],
                                 env={"RAGMED_API_KEYS": "unused-key-0123456789abcdef"}, timeout=180)
        yield {"url": url, "fhir": fhir}
        stop_server(proc)
    finally:
        fhir.close()
        proc_o.terminate()
        proc_o.wait(timeout=30)


def token(keys, aud, *, kid="ehr-rsa", alg="RS384", iss=ISSUER, exp_in=240, iat_shift=0, jti=None, key=None,
          drop=()):
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "exp": now + exp_in, "iat": now + iat_shift, "jti": jti or str(uuid.uuid4())}
    for k in drop:
        claims.pop(k)
    priv = key if key is not None else (keys["rsa"] if kid == "ehr-rsa" else keys["ec"])
    return jwt.encode(claims, priv, algorithm=alg, headers={"kid": kid})


def hs256(claims: dict, secret: bytes) -> str:
    """An HS256 JWT written by hand (PyJWT refuses to use a PEM key as an HMAC secret, which is the point)."""
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ehr-rsa"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def call(server, keys, service, body, **tk):
    url = f"{server['url']}/cds-services/{service}"
    return httpx.post(url, json=body, headers={"Authorization": "Bearer " + token(keys, url, **tk)}, timeout=120)


def patient_view(prefetch=None, fhir=None, patient=PATIENT, auth=True):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": patient}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir:
        body["fhirServer"] = fhir
        if auth:
            body["fhirAuthorization"] = {"access_token": "fhir-token-123", "token_type": "Bearer", "expires_in": 300,
                                         "scope": "patient/ImagingStudy.read", "subject": "ragmed"}
    return body


def check_cards(r):
    from ragmed.serve.cds import CdsResponse

    assert r.status_code == 200, r.text
    resp = CdsResponse.model_validate(r.json())  # the specification's response shape
    for c in resp.cards:
        assert len(c.summary) < 140 and c.indicator in ("info", "warning", "critical") and c.source.label
    return r.json()["cards"]


def test_discovery(server):
    from ragmed.serve.cds import ServiceDescription

    r = httpx.get(server["url"] + "/cds-services")
    assert r.status_code == 200
    services = r.json()["services"]
    for s in services:
        ServiceDescription.model_validate(s)
    assert {s["hook"] for s in services} == {"order-select", "order-sign", "patient-view"}
    pv = next(s for s in services if s["hook"] == "patient-view")
    assert pv["prefetch"]["studies"].startswith("ImagingStudy?patient={{context.patientId}}")


def test_patient_view_with_prefetch_returns_a_cited_card(server, keys):
    from ragmed.io.dicomweb import study_case_id

    r = call(server, keys, "ragmed-imaging-patient-view",
             patient_view(prefetch={"studies": bundle(imaging_study(CT_SMALL_STUDY))}))
    cards = check_cards(r)
    assert len(cards) == 1
    c = cards[0]
    assert c["summary"].startswith("ragmed")
    assert study_case_id(CT_SMALL_STUDY) in c["detail"] and "[1]" in c["detail"] and "**Evidence**" in c["detail"]
    assert CT_SMALL_STUDY not in r.text and "CompressedSamples" not in r.text
    links = [ln for ln in c["links"] if "/thumbnail" in ln["url"]]
    assert links and all(ln["type"] == "absolute" for ln in c["links"])
    img = httpx.get(links[0]["url"])  # a signed, expiring link: no API key needed
    assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    tampered = links[0]["url"].replace("sig=", "sig=0")
    assert httpx.get(tampered).status_code == 401


def test_412_when_neither_prefetch_nor_fhir_server_has_the_data(server, keys):
    r = call(server, keys, "ragmed-imaging-patient-view", patient_view())
    assert r.status_code == 412 and r.json()["error"]["type"] == "prefetch_missing"
    r = call(server, keys, "ragmed-imaging-patient-view", patient_view(fhir=server["fhir"].url, patient="pat-none"))
    assert r.status_code == 412
    r = call(server, keys, "ragmed-imaging-patient-view", patient_view(fhir="http://127.0.0.1:9/fhir"))
    assert r.status_code == 412 and "cannot be reached" in r.json()["error"]["message"]


def test_fetches_from_the_fhir_server_when_prefetch_is_missing(server, keys):
    fhir = server["fhir"]
    fhir.requests.clear()
    cards = check_cards(call(server, keys, "ragmed-imaging-patient-view", patient_view(fhir=fhir.url)))
    assert len(cards) == 1 and "[1]" in cards[0]["detail"]
    path, auth = fhir.requests[0]
    assert path.startswith("/fhir/ImagingStudy?patient=pat-1") and auth == "Bearer fhir-token-123"


def test_order_select_and_order_sign(server, keys):
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "status": "draft", "intent": "order",
          "subject": {"reference": f"Patient/{PATIENT}"},
          "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}]}],
          "code": {"text": "CT chest"}, "reasonCode": [{"text": "suspected pleural effusion"}]}
    body = {"hook": "order-select", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": PATIENT, "selections": ["ServiceRequest/sr1"],
                        "draftOrders": bundle(sr)},
            "prefetch": {"studies": bundle(imaging_study(CT_SMALL_STUDY))}}
    cards = check_cards(call(server, keys, "ragmed-imaging-order-select", body))
    assert len(cards) == 1 and "[1]" in cards[0]["detail"]
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": PATIENT,
                        "draftOrders": bundle(imaging_study(CT_SMALL_STUDY))}}
    assert len(check_cards(call(server, keys, "ragmed-imaging-order-sign", body, kid="ehr-ec", alg="ES384"))) == 1
    lab = dict(sr, category=[{"coding": [{"system": "http://snomed.info/sct", "code": "108252007",
                                          "display": "Laboratory procedure"}]}], code={"text": "Serum sodium"})
    body = {"hook": "order-select", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": PATIENT, "draftOrders": bundle(lab)}}
    assert check_cards(call(server, keys, "ragmed-imaging-order-select", body)) == []  # not about imaging
    body["hook"] = "patient-view"
    r = call(server, keys, "ragmed-imaging-order-select", body)
    assert r.status_code == 400  # the hook does not match the service


def test_abstains_when_evidence_is_insufficient(server, keys):
    # an imaging order with no prior study: a text-only question far from this four-study chest / abdomen / head index
    sr = {"resourceType": "ServiceRequest", "id": "sr2", "status": "draft", "intent": "order",
          "subject": {"reference": f"Patient/{PATIENT}"}, "code": {"text": "Fundus imaging"},
          "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}]}],
          "reasonCode": [{"text": "retinal vessel tortuosity grading"}]}
    body = {"hook": "order-select", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": PATIENT, "draftOrders": bundle(sr)},
            "prefetch": {"studies": bundle()}}
    cards = check_cards(call(server, keys, "ragmed-imaging-order-select", body))
    assert len(cards) == 1
    c = cards[0]
    assert c["indicator"] == "info" and c["summary"].startswith("ragmed abstains")
    assert "Insufficient evidence" in c["detail"] and "calibrated floor" in c["detail"]


def test_jwt_authentication(server, keys):
    from cryptography.hazmat.primitives import serialization

    svc = "ragmed-imaging-patient-view"
    url = f"{server['url']}/cds-services/{svc}"
    body = patient_view(prefetch={"studies": bundle(imaging_study(CT_SMALL_STUDY))})

    def status(headers):
        return httpx.post(url, json=body, headers=headers, timeout=120)

    r = status({})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert status({"Authorization": "Bearer not.a.jwt"}).status_code == 401
    bad = [token(keys, url, exp_in=-120),                      # expired
           token(keys, url, key=rsa_key()),                    # signed by a key not in the JWKS, same kid
           token(keys, "https://elsewhere.example/cds-services/x"),
           token(keys, url, iss="https://evil.example"),
           token(keys, url, drop=("jti",)),
           token(keys, url, exp_in=3600),                      # longer-lived than five minutes
           token(keys, url, iat_shift=600, exp_in=900)]        # issued in the future
    pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    bad.append(hs256({"iss": ISSUER, "aud": url, "exp": int(time.time()) + 60, "iat": int(time.time()),
                      "jti": "x"}, pem))  # the public key as an HMAC secret: the classic algorithm confusion
    for t in bad:
        r = status({"Authorization": "Bearer " + t})
        assert r.status_code == 401, (r.status_code, jwt.decode(t, options={"verify_signature": False}))
    good = token(keys, url)
    assert status({"Authorization": "Bearer " + good}).status_code == 200
    r = status({"Authorization": "Bearer " + good})  # the same jti again
    assert r.status_code == 401 and "replayed" in r.json()["error"]["message"]


def test_feedback(server, keys):
    svc = "ragmed-imaging-patient-view"
    cards = check_cards(call(server, keys, svc, patient_view(prefetch={"studies": bundle(imaging_study(CT_SMALL_STUDY))})))
    url = f"{server['url']}/cds-services/{svc}/feedback"
    fb = {"feedback": [{"card": cards[0]["uuid"], "outcome": "overridden",
                        "overrideReason": {"reason": {"code": "not-relevant", "display": "Not relevant"}},
                        "outcomeTimestamp": "2026-11-29T12:00:00Z"}]}
    r = httpx.post(url, json=fb, headers={"Authorization": "Bearer " + token(keys, url)})
    assert r.status_code == 200, r.text
    fb["feedback"][0]["card"] = str(uuid.uuid4())
    r = httpx.post(url, json=fb, headers={"Authorization": "Bearer " + token(keys, url)})
    assert r.status_code == 400
    assert httpx.post(url, json=fb).status_code == 401


def test_guidance_response_is_valid_fhir(server, keys):
    from fhir.resources.R4B.guidanceresponse import GuidanceResponse

    from ragmed.serve.fhir import guidance_response

    cards = check_cards(call(server, keys, "ragmed-imaging-patient-view",
                             patient_view(prefetch={"studies": bundle(imaging_study(CT_SMALL_STUDY))})))
    answer = {"question": "What abnormality is seen?", "answer": cards[0]["summary"], "insufficient_evidence": False,
              "evidence": [{"ref": "[1]", "case_id": "study-x", "score": 0.5, "excerpt": "FINDINGS: effusion"}],
              "knowledge": [], "models": {"generator": "extractive"}, "intended_use": "decision support"}
    g = GuidanceResponse.model_validate(guidance_response(answer, service_uri=server["url"] + "/cds-services/x",
                                                          request_id=str(uuid.uuid4()), patient_ref="Patient/pat-1",
                                                          study_uid=CT_SMALL_STUDY))
    assert g.status == "success" and g.note[0].text and g.reasonReference[0].reference == "#report"


def test_cds_configuration(tmp_path, keys):
    from ragmed.errors import ConfigError
    from ragmed.serve.cds import CdsSettings

    cfg = tmp_path / "services.yaml"
    cfg.write_text("services:\n  - id: chest-xr\n    hook: order-sign\n    title: Chest X-ray evidence\n"
                   "    description: Evidence for chest radiograph orders\n    question: Is there a pneumothorax?\n")
    s = CdsSettings.load(jwks=keys["jwks"], issuers=[ISSUER], config=cfg)
    assert [(x.id, x.hook, x.question) for x in s.services] == [("chest-xr", "order-sign", "Is there a pneumothorax?")]
    assert s.services[0].describe() == {"hook": "order-sign", "title": "Chest X-ray evidence", "id": "chest-xr",
                                        "description": "Evidence for chest radiograph orders"}
    with pytest.raises(ConfigError, match="issuer"):
        CdsSettings.load(jwks=keys["jwks"], issuers=[])
    sym = tmp_path / "sym.json"
    sym.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    with pytest.raises(ConfigError, match="symmetric"):
        CdsSettings.load(jwks=sym, issuers=[ISSUER])
