"""Chat service: chat, Q&A and polls over NATS request-reply, history in Redis."""
