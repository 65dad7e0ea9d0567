# A GPU host image: the project with its GPU extra (Unsloth, bitsandbytes), `python -m sweep` as entry point.
#   docker build -t lora-sweep .
#   docker run --gpus all -v "$PWD/studies:/app/studies" -v "$PWD/data:/app/data" -v "$PWD/runs:/app/runs" \
#              -v "$HOME/.cache/huggingface:/cache/huggingface" lora-sweep run --study lr-rank
# The base's torch (CUDA 12.8) lies inside Unsloth 2026.10's supported range; the install keeps it as it is.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    UNSLOTH_DISABLE_STATISTICS=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sweep ./sweep
COPY trainer ./trainer
# pin torch (and torchvision) to the base's builds so the GPU extra cannot swap them for others
RUN python -c "import torch, torchvision; print(f'torch=={torch.__version__}\ntorchvision=={torchvision.__version__}')" > /tmp/keep.txt \
    && pip install --no-cache-dir -c /tmp/keep.txt ".[gpu]" \
    && rm /tmp/keep.txt
COPY studies ./studies

VOLUME ["/app/studies", "/app/data", "/app/runs", "/cache/huggingface"]
ENTRYPOINT ["python", "-m", "sweep"]
CMD ["--help"]
