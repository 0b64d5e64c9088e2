import uvicorn

from services.signaling.main import create_app
from services.signaling.settings import SignalingSettings

if __name__ == "__main__":
    settings = SignalingSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.signaling_host,
        port=settings.signaling_port,
        log_config=None,
        ws_max_size=settings.signaling_ws_max_bytes,
    )
