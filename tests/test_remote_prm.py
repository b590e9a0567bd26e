"""Issue 18: a PRM served by vLLM's pooling API (Qwen2.5-Math-PRM format), against the
response shapes of vLLM's documentation and a local stand-in."""

from __future__ import annotations

import pytest

from openai_standin import Standin
from test_cli import assert_one_line_error, tts
from tts_tui.backends.openai import OpenAIClient, RemoteError
from tts_tui.backends.openai.prm import RemotePRM, prm_input, step_rewards
from tts_tui.errors import InputError
from tts_tui.search.protocol import SearchParams

# vLLM's /pooling answer for Qwen/Qwen2.5-Math-PRM-7B (STEP pooling, softmax over its two
# classes at each <extra_0>), in the shape its pooling API documents
VLLM_POOLING = {"id": "pool-f91dd2b570d74fc1835a4085f4c101cd", "object": "list", "created": 1751630893,
                "model": "Qwen/Qwen2.5-Math-PRM-7B",
                "data": [{"index": 0, "object": "pooling", "data": [[0.0091, 0.9909], [0.2234, 0.7766], [0.8912, 0.1088]]}],
                "usage": {"prompt_tokens": 213, "total_tokens": 213, "completion_tokens": 0,
                          "prompt_tokens_details": None}}


def test_the_prm_reads_its_chat_with_a_tag_after_every_step():
    text = prm_input(" What is 6*7? ", ["Six sevens.\n\n", "  ", "That is \\boxed{42}."])
    assert text == ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                    "<|im_end|>\n<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\n"
                    "Six sevens.<extra_0>That is \\boxed{42}.<extra_0><|im_end|>\n")


def test_vllms_pooling_answer_gives_p_right_per_step():
    assert step_rewards(VLLM_POOLING["data"][0]["data"]) == [0.9909, 0.7766, 0.1088]
    for bad in ([0.1, 0.9], [[0.1, 0.2, 0.7]], "AAAA", [["a", "b"]]):  # an embedding, 3 classes, base64, junk
        with pytest.raises(RemoteError) as err:
            step_rewards(bad)
        assert "\n" not in str(err.value)


def test_a_node_is_scored_by_p_right_at_its_last_step_in_one_request():
    class Recorded:
        base_url = shown = "http://prm"
        bodies = []

        def post(self, path, body, stop=None):
            self.bodies.append((path, body))
            return {**VLLM_POOLING, "data": [{**VLLM_POOLING["data"][0], "index": i} for i in range(len(body["input"]))]}

    from fakes import FakeGenerator
    from tts_tui.search.run import Search
    from tts_tui.verify.answers import MathAnswers

    prm = RemotePRM(Recorded(), "Qwen/Qwen2.5-Math-PRM-7B")
    search = Search(FakeGenerator(), "What is 6*7?", SearchParams(n=2), MathAnswers(), prm)
    paths = search.expand([search.tree.root] * 2, max_steps=3)
    scores = prm.score(search, [p[-1] for p in paths])
    assert scores == [0.1088, 0.1088]
    (path, body), = Recorded.bodies
    assert path == "/pooling" and body["model"] == "Qwen/Qwen2.5-Math-PRM-7B" and len(body["input"]) == 2
    assert prm.prompt_tokens == 213


@pytest.mark.parametrize("strategy", ["beam", "weighted", "best-of-n", "dvts"])
def test_strategies_run_with_a_remote_prm(strategy):
    from tts_tui.session import RemoteSolver

    with Standin() as policy, Standin(pools=True) as prm_server:
        solver = RemoteSolver(policy.url, "standin", prm_url=prm_server.url, prm_model="prm")
        solver.client.backoff = solver._prm.client.backoff = 0.0
        result, search = solver.solve("What is 6*7?", strategy, SearchParams(n=4, m=2, budget=4000, max_steps=8),
                                      "prm")
        assert result.answer == "42"
        scored = [n for n in search.tree.nodes.values() if "prm" in n.scores]
        assert scored and {round(n.scores["prm"], 4) for n in scored} <= {0.9, 0.3}
        pooled = [b for b in prm_server.bodies if "input" in b]
        assert len(pooled) >= 2  # the check, then the scoring


def test_a_server_that_does_not_pool_is_refused_in_one_line():
    from tts_tui.session import RemoteSolver

    with Standin() as policy, Standin() as not_a_prm:  # answers 404 on /pooling
        solver = RemoteSolver(policy.url, "standin", prm_url=not_a_prm.url, prm_model="prm")
        with pytest.raises(RemoteError) as err:
            solver.solve("What is 6*7?", "beam", SearchParams(n=4, m=2, budget=400), "prm")
        assert "404" in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(InputError, match="needs --prm-url"):
            RemoteSolver(policy.url, "standin").scorer("prm")


def test_prm_url_mistakes_are_one_line():
    assert_one_line_error(tts("solve", "1+1?", "--prm-url", "http://127.0.0.1:9"), match="needs --backend openai")
    assert_one_line_error(tts("solve", "1+1?", "--backend", "openai", "--base-url", "http://127.0.0.1:9",
                              "--model", "m", "--prm-url", "http://127.0.0.1:9"), match="needs --prm NAME")


def test_the_policys_key_is_not_sent_to_the_prm_server():
    from tts_tui.session import RemoteSolver

    with Standin() as policy, Standin(pools=True) as prm_server:
        solver = RemoteSolver(policy.url, "standin", api_key="sk-policy", prm_url=prm_server.url, prm_model="prm")
        solver.solve("What is 6*7?", "weighted", SearchParams(n=2, budget=400), "prm")
        assert prm_server.headers and not any("Authorization" in h for h in prm_server.headers)
        assert all(h.get("Authorization") == "Bearer sk-policy" for h in policy.headers)
        keyed = RemoteSolver(policy.url, "standin", prm_url=prm_server.url, prm_model="prm", prm_api_key="sk-prm")
        keyed.solve("What is 6*7?", "weighted", SearchParams(n=2, budget=400), "prm")
        assert prm_server.headers[-1].get("Authorization") == "Bearer sk-prm"
