"""A local stand-in for an OpenAI-compatible server (llama-server's response shapes), with
faults on demand: for the remote backend's tests without a model."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Standin:
    """Solutions of `depth` steps; seed % 3 == 2 answers 41, the others 42. `fail` is a
    list of faults served to the next requests in order: an HTTP status, "garbage", "slow"."""

    def __init__(self, depth: int = 3, step_tokens: int = 4, pools: bool = False, port: int = 0,
                 templates: bool = True) -> None:
        self.templates = templates  # False: no /apply-template (as vLLM, SGLang)
        self.depth = depth
        self.pools = pools  # answers vLLM's /pooling as a PRM would
        self.step_tokens = step_tokens
        self.fail: list = []
        self.fail_get: list = []  # HTTP statuses for the next GETs (a server loading, overloaded)
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> Standin:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def completion(self, body: dict) -> dict:
        prompt = body["prompt"]
        if "Which solution is correct" in prompt:
            a_good = "Solution A:\n" in prompt and "\\boxed{42}" in prompt.split("Solution B:")[0]
            top = [{"token": "A", "logprob": -0.1 if a_good else -2.0}, {"token": "B", "logprob": -2.0 if a_good else -0.1}]
            return self._wrap("A", [{"id": 1, "token": "A", "logprob": top[0]["logprob"], "top_logprobs": top}],
                              "length", "limit", prompt)
        if "Is the last step of this solution correct?" in prompt:
            good = "\\boxed{42}" in prompt or "Step" in prompt.split("Is the last step")[0][-200:]
            top = [{"token": "Yes", "logprob": -0.2 if good else -2.0}, {"token": "No", "logprob": -2.0 if good else -0.2}]
            return self._wrap("Yes" if good else "No", [{"id": 2, "token": top[0]["token"], "logprob": top[0]["logprob"],
                                                        "top_logprobs": top}], "length", "limit", prompt)
        done = prompt.split("<|im_start|>assistant\n")[-1]
        k = len(re.findall(r"Step \d+\.", done)) + 1
        seed = (body.get("seed", 0) - (k - 1)) // 1_000_003  # the branch's seed (the client adds the step)
        answer = "41" if seed % 3 == 2 else "42"
        text = f"Step {k}.\n\n" if k < self.depth else f"So the answer is \\boxed{{{answer}}}."
        stops = [s for s in body.get("stop") or [] if s and s in text]
        if stops:
            text, kind = text[: text.index(stops[0])], "word"
        else:
            kind = "eos"
        n = min(body.get("max_tokens", 16), self.step_tokens)
        if len(text) > 0 and body.get("max_tokens", 16) < self.step_tokens:
            text, kind = text[: body["max_tokens"]], "limit"
        lp = -0.1 * (1 + seed % 3)
        content = [{"id": 100 + j, "token": "x", "logprob": lp, "top_logprobs": [{"token": "x", "logprob": lp}]}
                   for j in range(n)]
        return self._wrap(text, content, "length" if kind == "limit" else "stop", kind, prompt)

    @staticmethod
    def _wrap(text, content, finish, kind, prompt) -> dict:
        return {"choices": [{"text": text, "index": 0, "finish_reason": finish, "logprobs": {"content": content}}],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content),
                          "total_tokens": len(prompt) // 4 + len(content),
                          # as a prefix cache would: the system prompt and question served from it
                          "prompt_tokens_details": {"cached_tokens": min(len(prompt) // 4, 20)}},
                "__verbose": {"stop_type": kind, "tokens": [c["id"] for c in content]}}

    def pooling(self, body: dict) -> dict:
        """vLLM's /pooling for a Qwen2.5-Math-PRM: [P(wrong), P(right)] at each <extra_0>;
        a step that says 42 is right (0.9), any other 0.3."""
        data = []
        for i, text in enumerate(body["input"]):
            steps = text.split("<|im_start|>assistant\n", 1)[-1].split("<extra_0>")[:-1]
            data.append({"index": i, "object": "pooling",
                         "data": [[0.1, 0.9] if "42" in st else [0.7, 0.3] for st in steps]})
        return {"id": "pool-standin", "object": "list", "created": 0, "model": body["model"], "data": data,
                "usage": {"prompt_tokens": 10 * len(data), "total_tokens": 10 * len(data)}}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, payload: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout tests)

            def do_GET(self) -> None:
                if standin.fail_get:
                    return self._send(standin.fail_get.pop(0), b'{"error": {"message": "injected"}}')
                if self.path == "/v1/models":
                    self._send(200, json.dumps({"data": [{"id": "standin"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                standin.bodies.append(body)
                standin.headers.append(dict(self.headers))
                if standin.fail:
                    fault = standin.fail.pop(0)
                    if fault == "garbage":
                        return self._send(200, b'{"choices": [tru')
                    if fault == "truncated":  # promises more bytes than it sends, then hangs up
                        self.send_response(200)
                        self.send_header("Content-Length", "1000")
                        self.end_headers()
                        self.wfile.write(b'{"choices": ')
                        self.close_connection = True
                        return
                    if fault == "slow":
                        time.sleep(2.0)
                    elif isinstance(fault, int):
                        return self._send(fault, b'{"error": {"message": "injected"}}')
                if self.path == "/apply-template" and standin.templates:
                    msgs = body["messages"]
                    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
                    return self._send(200, json.dumps({"prompt": text + "<|im_start|>assistant\n"}).encode())
                if self.path == "/v1/completions":
                    return self._send(200, json.dumps(standin.completion(body)).encode())
                if self.path == "/pooling" and standin.pools:
                    return self._send(200, json.dumps(standin.pooling(body)).encode())
                self._send(404, b'{"error": {"message": "not found"}}')

        return Handler
