"""The evidence viewer: one static page (``GET /viewer``) with its script and style, all served from the package
(no CDN: ragmed runs offline). The page calls ``POST /v1/ask`` with the API key the user types (kept in the tab's
``sessionStorage`` only) and shows the answer with its citations, the evidence cases side by side (thumbnails from
``/v1/cases/{case}/images/{image}/thumbnail``, scores, report excerpts) and the knowledge concepts."""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).with_name("static")


def mount_viewer(app) -> None:
    from fastapi.responses import FileResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/viewer/static", StaticFiles(directory=STATIC), name="viewer-static")

    @app.get("/viewer", include_in_schema=True, tags=["viewer"], summary="The evidence viewer (HTML page)",
             response_class=FileResponse)
    def viewer():
        return FileResponse(STATIC / "viewer.html", media_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:",
                                     "X-Content-Type-Options": "nosniff"})

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/viewer")
