FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 INSTANCE_DIR=/data
WORKDIR /srv
RUN useradd --create-home --uid 10001 service && mkdir -p /data /metrics && chown service /data /metrics
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
USER service
EXPOSE 5000
# One role per container, with the command line `make run` uses for it (`python launcher.py ROLE`).
ENV HOST=0.0.0.0
CMD ["python", "launcher.py", "api"]
