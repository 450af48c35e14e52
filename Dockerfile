# inquiry-triage service image. CPU by default; for NVIDIA GPU hosts build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t inquiry-triage:gpu .
# and run with `--gpus all` (the service picks CUDA automatically).
FROM python:3.11-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY model ./model
COPY consumer ./consumer
COPY training ./training
COPY devtools ./devtools
COPY console ./console
COPY triage ./triage
RUN pip install '.[offline-model]'

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    TRIAGE_MODEL_DIR=/models \
    TRIAGE_LOG_FORMAT=json
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 triage \
    && install -d -o triage -g triage /var/lib/inquiry-triage
# in a container loopback cannot be scraped: the image listens on every interface of its own network
ENV TRIAGE_STATE_DIR=/var/lib/inquiry-triage \
    TRIAGE_METRICS_HOST=0.0.0.0
USER triage
WORKDIR /app
# Trained artifacts (intent/ and sentiment/) are mounted at /models: see docker-compose.yml.
VOLUME ["/models"]
ENTRYPOINT ["triage"]
CMD ["run"]
