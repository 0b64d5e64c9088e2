import uvicorn

from services.chat.main import create_app
from services.chat.settings import ChatSettings

if __name__ == "__main__":
    settings = ChatSettings()
    uvicorn.run(
        create_app(settings), host=settings.chat_host, port=settings.chat_port, log_config=None
    )
