# A GPU host image: the project with its GPU extra (Unsloth, bitsandbytes), `python -m sweep` as entry point.
#   docker build -t lora-sweep .                                   # --build-arg EXTRAS=gpu,tracking: + trackers
#   docker run --gpus all --user "$(id -u):$(id -g)" -e HF_TOKEN \
#              -v "$PWD/studies:/app/studies" -v "$PWD/data:/app/data" -v "$PWD/runs:/app/runs" \
#              -v "$HOME/.cache/huggingface:/cache/huggingface" lora-sweep run --study lr-rank
#   docker run -p 127.0.0.1:8080:8080 --user "$(id -u):$(id -g)" -v "$PWD/studies:/app/studies" \
#              -v "$PWD/data:/app/data" -v "$PWD/runs:/app/runs" lora-sweep dashboard --study lr-rank --host 0.0.0.0
# The base's torch (CUDA 12.8) lies inside Unsloth 2026.10's supported range; the install keeps it as it is.
# The -runtime base has no C compiler, and Triton (under Unsloth's kernels) compiles a small C launcher
# for each kernel at run time: build-essential adds gcc (far smaller than the -devel image, whose CUDA
# toolkit nothing here uses; Triton brings its own ptxas).
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

# HF_TOKEN (pass it with `-e HF_TOKEN`) is read by huggingface_hub for gated models such as Llama 3;
# HOME is writable by any user id, as `--user "$(id -u):$(id -g)"` makes the container run with one
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    HOME=/home/sweep \
    UNSLOTH_DISABLE_STATISTICS=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sweep ./sweep
COPY trainer ./trainer
# pin torch (and torchvision) to the base's builds so the GPU extra cannot swap them for others
ARG EXTRAS=gpu
RUN python -c "import torch, torchvision; print(f'torch=={torch.__version__}\ntorchvision=={torchvision.__version__}')" > /tmp/keep.txt \
    && pip install --no-cache-dir -c /tmp/keep.txt ".[${EXTRAS}]" \
    && rm /tmp/keep.txt
COPY studies ./studies

# not root: a user of its own by default; the folders it writes are open to any user id, so
# `--user "$(id -u):$(id -g)"` also works and leaves the files in the mounted runs/ owned by you
RUN useradd --create-home --home-dir /home/sweep --shell /bin/bash sweep \
    && mkdir -p /app/data /app/runs /cache/huggingface \
    && chown -R sweep:sweep /app/studies /app/data /app/runs /cache/huggingface /home/sweep \
    && chmod -R a+rwX /app/data /app/runs /cache/huggingface /home/sweep
USER sweep

VOLUME ["/app/studies", "/app/data", "/app/runs", "/cache/huggingface"]
# `sweep dashboard --host 0.0.0.0` inside the container; publish it with -p 127.0.0.1:8080:8080
EXPOSE 8080
ENTRYPOINT ["python", "-m", "sweep"]
CMD ["--help"]
