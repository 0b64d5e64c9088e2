import uvicorn

from services.restream.main import create_app
from services.restream.settings import RestreamSettings

if __name__ == "__main__":
    settings = RestreamSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.restream_host,
        port=settings.restream_port,
        log_config=None,
    )
