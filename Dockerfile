# One image for both roles:
#   web:    docker run -p 8081:8081 --env-file .env pulse
#   worker: docker run --env-file .env pulse celery -A pulse worker --loglevel INFO
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=8081 PULSE_VAR_DIR=/var/lib/pulse \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --uid 10001 --home-dir /app pulse \
 && mkdir -p /var/lib/pulse \
 && SECRET_KEY=build-only python manage.py collectstatic --noinput \
 && chown -R pulse:pulse /var/lib/pulse
USER pulse

EXPOSE 8081
HEALTHCHECK CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
# Migrations run as a release step: docker run pulse python manage.py migrate && ... sync_providers
CMD ["sh", "-c", "exec uvicorn pulse.asgi:application --host 0.0.0.0 --port ${PORT} --workers ${WEB_CONCURRENCY:-2} --loop uvloop --http httptools --no-access-log"]
