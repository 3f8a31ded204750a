"""Record real llama.cpp wire samples into tests/fixtures/llamacpp/: SSE streams, JSON answers, error bodies, /metrics.

Run with the gateway's Python from the checkout (`python scripts/real/record_llamacpp.py`): it builds or reuses
llama-server and the test model in GGUF (scripts/real/setup-llamacpp; a first build takes about 16 minutes),
starts a generate server and an embeddings server on loopback, sends each sample request, writes the bytes
exactly as they came, and stops the servers. `--generate URL --embeddings URL` records from servers already
running instead. index.json says what request made each file, its status and the build recorded from;
tests/delivery/test_llamacpp_fixtures.py replays them through the gateway's relay and error reading.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.real import servers  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "llamacpp"
SETUP = ROOT / "scripts" / "real" / "setup-llamacpp"
PINS = ROOT / "scripts" / "real" / "llamacpp-pins.txt"
# One slot of the test model's whole 512-token window, so a prompt over it and a queue are easy to make.
FLAGS = ("--ctx-size", "512", "--parallel", "1", "--threads", "1", "--no-webui")
HELLO = [{"role": "user", "content": "Say hello."}]
SAME = {"temperature": 0, "seed": 7, "max_tokens": 6, "ignore_eos": True}
USAGE = {"stream_options": {"include_usage": True}}
TOO_LONG = "hi " * 600
LONG = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 400, "ignore_eos": True}
Samples = dict[str, tuple[str, dict[str, Any]]]  # file -> (path, body); "model" is added
GENERATE: Samples = {
    "chat.json": ("/v1/chat/completions", {"messages": HELLO, **SAME}),
    "chat-stream.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **SAME}),
    "chat-stream-usage.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **USAGE, **SAME}),
    "chat-stream-logprobs-usage.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **USAGE, **SAME,
                                                                "logprobs": True, "top_logprobs": 2}),
    "chat-max-tokens-over-window.json": ("/v1/chat/completions", {"messages": HELLO, **SAME, "max_tokens": 600}),
    "completions.json": ("/v1/completions", {"prompt": "Say hello.", **SAME}),
    "completions-stream.sse": ("/v1/completions", {"prompt": "Say hello.", "stream": True, **SAME}),
    "completions-stream-usage.sse": ("/v1/completions", {"prompt": "Say hello.", "stream": True, **USAGE, **SAME}),
    "error-prompt-too-long.json": ("/v1/chat/completions", {"messages": [{"role": "user", "content": TOO_LONG}],
                                                            "max_tokens": 8}),
    "error-prompt-too-long-stream.json": ("/v1/chat/completions", {"messages": [{"role": "user",
                                                                                 "content": TOO_LONG}],
                                                                   "max_tokens": 8, "stream": True}),
    "error-completions-prompt-too-long.json": ("/v1/completions", {"prompt": TOO_LONG, "max_tokens": 8}),
    "error-n2.json": ("/v1/chat/completions", {"messages": HELLO, **SAME, "n": 2, "temperature": 1.0}),
    "error-embeddings-unsupported.json": ("/v1/embeddings", {"input": "hello"}),
}
EMBEDDINGS: Samples = {
    "embeddings.json": ("/v1/embeddings", {"input": ["hello", "the quick brown fox"]}),
    "error-embeddings-too-large.json": ("/v1/embeddings", {"input": TOO_LONG}),
}


def build() -> dict[str, str]:
    """Run the setup script (instant once its cache is built): where llama-server and the GGUF model are."""
    done = subprocess.run(["bash", str(SETUP)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scripts/real/setup-llamacpp failed ({done.returncode}); its output is above")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def llama_server(built: dict[str, str], name: str, logs: Path, *extra: str) -> servers.Process:
    """A llama-server for the test model, on loopback only, serving it as `tiny`."""
    port = servers.free_port()
    argv = [built["server"], "--model", built["gguf"], "--alias", "tiny", *FLAGS, "--host", "127.0.0.1",
            "--port", str(port), *extra]
    return servers.Process(name, argv, {}, port, "/health", logs / f"{name}.log")


def record(url: str, samples: Samples) -> dict[str, Any]:
    """Send each sample, write its body as it came, and return what index.json says of it."""
    index = {}
    # A connection per request: llama-server's HTTP library closes a kept-alive connection after 5 idle
    # seconds, and a request sent on one as it closes fails with no answer (seen once on a loaded machine).
    with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for name, (path, body) in samples.items():
            request = {"model": "tiny", **body}
            with client.stream("POST", path, json=request) as response:
                data = response.read()
            (OUT / name).write_bytes(data)
            index[name] = {"path": path, "request": request, "status": response.status_code,
                           "content_type": response.headers.get("content-type")}
    return index


def busy_metrics(url: str) -> bytes:
    """/metrics while more long requests are sent than the server's one slot admits, so some are deferred."""
    def one(_: int) -> int:
        return httpx.post(url + "/v1/chat/completions", json={"model": "tiny", **LONG}, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(4)]
        text = b""
        for _ in range(400):  # read until a sample shows requests deferred (bounded)
            text = httpx.get(url + "/metrics", timeout=10).content
            if _gauge(text, "llamacpp:requests_deferred") > 0 and _gauge(text, "llamacpp:requests_processing") > 0:
                break
        for future in futures:
            future.result()
    return text


def _gauge(text: bytes, name: str) -> float:
    """A gauge's value in a /metrics page (llama.cpp's have no labels), 0 when absent."""
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--generate", help="a running llama-server started with --metrics (default: start one)")
    args.add_argument("--embeddings", help="a running llama-server started with --embeddings (default: start one)")
    parsed = args.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    built = build()
    started: list[servers.Process] = []
    logs = Path(tempfile.mkdtemp(prefix="record-llamacpp-"))
    try:
        urls = {}
        for role, given, extra in (("generate", parsed.generate, ("--metrics",)),
                                   ("embeddings", parsed.embeddings, ("--embeddings", "--pooling", "mean"))):
            if given:
                urls[role] = given.rstrip("/")
                continue
            process = llama_server(built, f"llama-{role}", logs, *extra)
            process.start(deadline_s=60)
            started.append(process)
            urls[role] = process.url
        props = httpx.get(urls["generate"] + "/props", timeout=10).json()
        index = record(urls["generate"], GENERATE) | record(urls["embeddings"], EMBEDDINGS)
        (OUT / "metrics.txt").write_bytes(httpx.get(urls["generate"] + "/metrics").content)
        (OUT / "metrics-busy.txt").write_bytes(busy_metrics(urls["generate"]))
    finally:
        for process in started:
            process.stop()
    pins = [line for line in PINS.read_text().splitlines() if line and not line.startswith("#")]
    meta = {"server": "llama.cpp", "version": props.get("build_info"), "sources": pins,
            "recorded": dt.date.today().isoformat(), "flags": " ".join(FLAGS), "files": index}
    (OUT / "index.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(index) + 2} files into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
