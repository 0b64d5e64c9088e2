"""Serves the browser client (static files, no build step) next to the WebSocket."""

import json
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from services.signaling.settings import SignalingSettings

STATIC = Path(__file__).resolve().parent / "static"

LANDING = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Webinar</title>
<link rel="stylesheet" href="/static/style.css"></head><body><div class="card">
<h2>Webinar platform</h2><p>Open the join link you received, or the registration link
of a webinar.</p></div></body></html>"""


def add_web_client(app: FastAPI, settings: SignalingSettings) -> None:
    config = {
        "registry_url": settings.public_registry_url.rstrip("/"),
        "ice_servers": json.loads(settings.signaling_client_ice_servers),
    }
    config_js = f"window.WEBINAR_CONFIG = {json.dumps(config)};\n"

    @app.get("/config.js", include_in_schema=False)
    async def client_config() -> Response:
        return Response(config_js, media_type="text/javascript")

    @app.get("/join", include_in_schema=False)
    async def join_page() -> FileResponse:
        return FileResponse(STATIC / "app.html", headers={"Referrer-Policy": "no-referrer"})

    @app.get("/register/{webinar_id}", include_in_schema=False)
    async def register_page(webinar_id: str) -> FileResponse:
        return FileResponse(STATIC / "register.html")

    @app.get("/", include_in_schema=False)
    async def landing() -> HTMLResponse:
        return HTMLResponse(LANDING)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
