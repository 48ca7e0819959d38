# The one image behind every process of docker-compose.yml (web, worker, scheduler, release).
FROM python:3.11-slim

ENV APP_ENV=production \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --uid 10001 --no-create-home app
USER app

EXPOSE 8000
CMD ["gunicorn", "--no-control-socket", "-b", "0.0.0.0:8000", "-k", "gthread", "-w", "2", "--threads", "8", "web:create_app()"]
