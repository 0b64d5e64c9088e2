# One image for every service; the Deployment picks the service with `python -m services.<name>`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY services ./services
RUN pip install --no-cache-dir . && useradd --uid 10001 webinar
USER 10001
