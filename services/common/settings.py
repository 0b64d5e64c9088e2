"""Settings every service shares, read from environment variables."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"
    # OTLP/HTTP endpoint, e.g. http://otel-collector:4318; tracing export is off when empty.
    otel_exporter_otlp_endpoint: str = ""
    # Public key (PEM) or a path to it; every service that accepts join tokens needs it.
    jwt_public_key: str = ""
    jwt_public_key_file: str = ""

    def public_key_pem(self) -> str:
        return _read_key(self.jwt_public_key, self.jwt_public_key_file, "JWT_PUBLIC_KEY")


def _read_key(inline: str, path: str, name: str) -> str:
    if inline:
        return inline.replace("\\n", "\n")
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    raise RuntimeError(f"{name} or {name}_FILE must be set")


def read_private_key(inline: str, path: str) -> str:
    return _read_key(inline, path, "JWT_PRIVATE_KEY")
