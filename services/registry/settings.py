from services.common.settings import CommonSettings, read_private_key

DEV_ADMIN_KEY = "dev-organizer-key"


class RegistrySettings(CommonSettings):
    registry_host: str = "127.0.0.1"
    registry_port: int = 8081
    jwt_private_key: str = ""
    jwt_private_key_file: str = ""
    webinar_admin_key: str = DEV_ADMIN_KEY
    # Where the web client lives; join and registration links point there.
    public_web_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 64 * 1024
    # Join tokens stay valid this long after the webinar's scheduled end.
    token_grace_hours: int = 6

    def private_key_pem(self) -> str:
        return read_private_key(self.jwt_private_key, self.jwt_private_key_file)
