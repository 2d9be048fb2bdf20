"""A real OpenAI-compatible server on loopback, serving a tiny model built here.

The server is Hugging Face `transformers serve` (transformers 5.x, FastAPI + uvicorn): routes
`/health`, `/v1/models`, `/v1/chat/completions` (SSE streaming). Observed behaviour that the
client must cope with, and that differs from TensorRT-LLM:
- it ignores `stream_options` (logs "Ignoring unsupported fields") but always puts `usage` in the
  final chunk, the one carrying `finish_reason` (choices not empty);
- it sends no `data: [DONE]`: the stream ends with the body;
- it has no API keys (never answers 401);
- an unknown model gets HTTP 400 "Server is pinned to ..." (the model is pinned at start-up);
- `/v1/models` lists the models found in the Hugging Face cache, so the tiny model is written in
  the cache layout (`models--tiny--chat/snapshots/<rev>/`) and served as `tiny/chat` with
  `HF_HUB_OFFLINE=1`, the way the production stack serves `openai/gpt-oss-120b` from `$HF_HOME`.

The tiny model (a 2-layer Llama wired by hand, see `build_tiny_model`, and a byte-level BPE
tokenizer trained here on generated text) is built in a subprocess, so torch is never imported
into the test process. Nothing is downloaded. It streams `delta.reasoning_content` (three words)
before `delta.content` and always generates exactly `max_tokens` tokens.

Use `start_server(workdir)` (or the `openai_server` fixture in conftest.py); run this file as
`python tests/support/openai_server.py build DIR` to build the model only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

MODEL_ID = "tiny/chat"
# Long enough for the prompt-calibration tests (a few hundred tokens) with room to spare.
MAX_POSITIONS = 4096
STARTUP_TIMEOUT_S = 180.0
# Words the tokenizer is trained on; prompts made of English words tokenize sensibly.
TRAINING_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "be",
    "this",
    "from",
    "or",
    "have",
    "an",
    "are",
    "not",
    "but",
    "all",
    "they",
    "one",
    "had",
    "there",
    "request",
    "prompt",
    "token",
    "model",
    "server",
    "answer",
    "stream",
    "latency",
    "benchmark",
    "reasoning",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "alpha",
    "beta",
    "gamma",
    "delta",
]


def _cache_repo_dir(cache_dir: Path) -> Path:
    owner, name = MODEL_ID.split("/")
    return cache_dir / f"models--{owner}--{name}"


REASONING_WORDS = 3
ANSWER_WORDS = 3


def build_tiny_model(cache_dir: Path) -> str:
    """Write the tiny model into `cache_dir` in the Hugging Face cache layout; return its id.

    The model is wired, not trained: every layer's output projections are zero (each layer adds
    nothing to the residual stream), embeddings are one-hot and the output head maps token i to a
    chosen successor. Greedy decoding is then a fixed chain: after the generation prompt
    `<|assistant|>` it emits `<think>`, three reasoning words, `</think>`, and then cycles through
    three answer words without end. The tokenizer's `response_template` tells transformers serve
    to stream the `<think>` region as `delta.reasoning_content` and the rest as `delta.content`,
    so the real server streams reasoning before the answer, as gpt-oss does, and never stops
    before `max_tokens` (completion_tokens == max_tokens, exactly).

    Imports torch/transformers, so call it in a subprocess (`python tests/support/openai_server.py build`).
    """
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(TRAINING_WORDS) for _ in range(40)) for _ in range(400)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<think>", "</think>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|eos|>", pad_token="<|eos|>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fast.response_template = {
        "defaults": {"role": "assistant"},
        "start_anchor": "<|assistant|>",
        "fields": {
            "reasoning_content": {"open": "<think>", "close": "</think>", "content": "text"},
            "content": {"close_pattern": r"<\|eos\|>", "content": "text"},
        },
    }
    vocab = len(fast)
    # Whole words with a leading space ("Ġword" in byte-level BPE) decode to readable text.
    word_ids = sorted(i for token, i in fast.get_vocab().items() if token[:1] == "Ġ" and token[1:].isalpha())
    reasoning_ids = word_ids[:REASONING_WORDS]
    answer_ids = word_ids[REASONING_WORDS : REASONING_WORDS + ANSWER_WORDS]
    token_id = fast.convert_tokens_to_ids
    chain = [
        token_id("<|assistant|>"),
        token_id("<think>"),
        *reasoning_ids,
        token_id("</think>"),
        *answer_ids,
    ]
    successor = dict(itertools.pairwise(chain))
    successor[answer_ids[-1]] = answer_ids[0]
    hidden = -(-vocab // 64) * 64  # one-hot embeddings need hidden >= vocab
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=MAX_POSITIONS,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for module in model.modules():
            if module.__class__.__name__.endswith("RMSNorm"):
                module.weight.fill_(1.0)  # type: ignore[operator]  # torch types Module attributes loosely
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
        for current in range(vocab):
            # Any token outside the chain (e.g. in the prompt) leads into the answer cycle.
            model.lm_head.weight[successor.get(current, answer_ids[0]), current] = 10.0
    repo = _cache_repo_dir(cache_dir)
    revision = hashlib.sha1(b"tiny-chat-v2").hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    model.save_pretrained(snapshot)
    fast.save_pretrained(snapshot)
    return MODEL_ID


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OpenAIServer:
    """A running `transformers serve` process on 127.0.0.1.

    Attributes:
        base_url: server root, no `/v1` (e.g. `http://127.0.0.1:41234`); the API is `base_url + "/v1"`,
            the health check `base_url + "/health"`.
        model: the served model name to send as `model` (`tiny/chat`), listed by `/v1/models`.
        api_key: always None: transformers serve checks no key (any Authorization header is ignored).
        port: the TCP port on 127.0.0.1.
        log_path: the server's combined stdout/stderr.
        process: the server's `subprocess.Popen`.
    Methods: `stop()` ends the server (idempotent); `is_running()`; `log_tail()`.
    """

    base_url: str
    model: str
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    api_key: str | None = None

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def server_environment(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_CACHE=str(cache_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        # Otherwise the CLI asks PyPI for a newer transformers at start-up.
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        TOKENIZERS_PARALLELISM="false",
        # One torch thread: the machine has 2 cores and the client under test needs one.
        OMP_NUM_THREADS="1",
    )
    return env


def ensure_model(workdir: Path) -> Path:
    """Build the tiny model once per `workdir`; return the cache directory."""
    cache_dir = workdir / "hf-cache"
    if not (_cache_repo_dir(cache_dir) / "refs" / "main").exists():
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "build", str(cache_dir)],
            check=True,
            env=server_environment(cache_dir),
            timeout=300,
            capture_output=True,
        )
    return cache_dir


def start_server(
    workdir: Path, startup_timeout_s: float = STARTUP_TIMEOUT_S, attempts: int = 3
) -> OpenAIServer:
    """Build the model if needed, start `transformers serve` on a free loopback port, wait for /health.

    The port is picked free, then bound by the server a moment later; if another process takes
    it in between, the server exits with "address already in use" and a new port is tried.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cache_dir = ensure_model(workdir)
    for attempt in range(1, attempts + 1):
        server = _launch(workdir, cache_dir)
        try:
            _wait_healthy(server, startup_timeout_s)
            return server
        except _PortTaken:
            if attempt == attempts:
                raise RuntimeError(
                    f"no free loopback port after {attempts} attempts:\n{server.log_tail()}"
                ) from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


def _launch(workdir: Path, cache_dir: Path) -> OpenAIServer:
    port = free_loopback_port()
    log_path = workdir / f"transformers-serve-{port}.log"
    command = [
        sys.executable,
        "-c",
        "from transformers.cli.transformers import main; main()",
        "serve",
        MODEL_ID,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--default-seed",
        "0",
        "--log-level",
        "warning",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=server_environment(cache_dir), cwd=workdir
        )
    return OpenAIServer(
        base_url=f"http://127.0.0.1:{port}", model=MODEL_ID, port=port, log_path=log_path, process=process
    )


def _wait_healthy(server: OpenAIServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.is_running():
            if "address already in use" in server.log_tail(200).lower():
                raise _PortTaken()
            raise RuntimeError(
                f"transformers serve exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if requests.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"transformers serve not healthy after {timeout_s} s:\n{server.log_tail()}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "build":
        print(json.dumps({"model": build_tiny_model(Path(sys.argv[2]))}))
    else:
        sys.exit("usage: python tests/support/openai_server.py build CACHE_DIR")
