from services.common.settings import CommonSettings


class ChatSettings(CommonSettings):
    """Environment variables of the chat service (CHAT_*, plus the common ones)."""

    chat_host: str = "127.0.0.1"
    # /healthz and /metrics
    chat_port: int = 8083
    # NATS queue group shared by every replica.
    chat_queue: str = "chat"
    # Commands handled at once per subject (FastStream handles one at a time by default).
    chat_max_workers: int = 64
    # Messages kept per webinar in the history stream (approximate, XADD MAXLEN ~).
    chat_history_max: int = 5000
    # At most this many messages (and questions) per participant per window.
    chat_rate_limit: int = 5
    chat_rate_window_seconds: float = 5.0
    # How long a webinar's `allow_anonymous_questions` is cached, and how long to wait for it.
    chat_webinar_cache_seconds: float = 10.0
    chat_registry_timeout_seconds: float = 1.0
