# The hosted demo in a container (Hugging Face Spaces' Docker SDK, or any container host).
# The code tree belongs to root and is read-only for the app's user; only /data is written.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DEMO_MODE=1 \
    ARTIFACTS_DIR=/data/artifacts KERAS_HOME=/data/keras DEMO_DATA_DIR=/data/demo HOME=/data/home

RUN useradd --create-home --uid 1000 user && mkdir -p /data/home && chown -R user /data

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .

USER user
EXPOSE 8501
CMD ["streamlit", "run", "streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
