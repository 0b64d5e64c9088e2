import uvicorn

from services.registry.main import create_app
from services.registry.settings import RegistrySettings

if __name__ == "__main__":
    settings = RegistrySettings()
    uvicorn.run(
        create_app(settings),
        host=settings.registry_host,
        port=settings.registry_port,
        log_config=None,
    )
