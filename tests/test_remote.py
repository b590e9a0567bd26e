"""Issue 18: the OpenAI-compatible backend against a local stand-in server (no model)."""

from __future__ import annotations

import socket

import pytest

from openai_standin import Standin
from tts_tui.backends.openai import OpenAIClient, RemoteError, RemoteGenerator
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import run_strategy
from tts_tui.verify.answers import MathAnswers
from tts_tui.verify.scorers import ConfidenceScorer


def make(standin, strategy_params=None, scorer=None, key=None, **client_kw):
    client = OpenAIClient(standin.url, api_key=key, backoff=0.0, **client_kw)
    gen = RemoteGenerator(client, "standin", concurrency=4)
    params = strategy_params or SearchParams(n=4, m=2, budget=4000, max_steps=8)
    return Search(gen, "What is 6*7?", params, MathAnswers(), scorer or ConfidenceScorer()), gen


@pytest.mark.parametrize("strategy", ["cot", "majority", "weighted", "best-of-n", "beam", "dvts", "bracket", "auto"])
def test_strategies_run_over_the_server(strategy):
    with Standin() as s:
        search, gen = make(s)
        result = run_strategy(strategy, search)
        assert result.answer == "42"
        assert result.tokens == gen.stats()["generated_tokens"] <= 4000  # counted from the server's usage
        steps = [n for n in search.tree.nodes.values() if n.kind == "step"]
        assert steps and all(n.logprobs for n in steps if n.tokens)
        # a partial solution is continued as raw text: every later prompt extends an earlier one
        prompts = [b["prompt"] for b in s.bodies if "prompt" in b and "Which solution" not in b["prompt"]]
        assert all(p.startswith("<|im_start|>system") for p in prompts)


def test_a_step_keeps_its_delimiter_and_the_end_is_told_from_a_stop():
    with Standin() as s:
        search, _ = make(s, SearchParams(n=1, budget=1000, max_steps=8))
        (path,) = search.expand([search.tree.root], max_steps=8)
        assert [n.text for n in path] == ["Step 1.\n\n", "Step 2.\n\n", "So the answer is \\boxed{42}."]
        assert path[-1].finish in ("eos", "stop") and path[-1].answer == "42"
        seeds = [b["seed"] for b in s.bodies if "seed" in b]
        assert len(seeds) == 3 and len(set(seeds)) == 3  # a fresh seed per step of the branch


def test_the_budget_is_a_hard_cap_across_parallel_requests():
    with Standin(step_tokens=4) as s:
        search, gen = make(s, SearchParams(n=8, budget=40, max_steps=8))
        run_strategy("majority", search)
        assert search.spent <= 40 and gen.stats()["generated_tokens"] <= 40


def test_a_tight_budget_is_shared_by_the_branches_not_taken_by_the_first_requests():
    with Standin(step_tokens=4) as s:
        search, gen = make(s, SearchParams(n=8, budget=40, max_steps=8))  # 4 requests in flight at once
        paths = search.expand([search.tree.root] * 8, max_steps=8, max_total=40)
        assert search.spent <= 40
        grown = [sum(n.n_tokens for n in path) for path in paths]
        # each branch its share of 40 / 8 tokens, give or take what the rounds' order leaves
        assert min(grown) >= 3 and max(grown) - min(grown) <= 4, grown
        assert max(s.bodies, key=lambda b: b.get("max_tokens", 0))["max_tokens"] <= 5


def test_5xx_and_429_are_retried_then_succeed():
    with Standin() as s:
        s.fail = [500, 429, 503]
        search, gen = make(s, SearchParams(n=1, budget=1000, max_steps=8))
        assert run_strategy("cot", search).answer == "42"
        assert gen.client.requests >= 3 + 4  # three refused tries, then template and steps


def test_a_server_that_keeps_failing_is_one_line():
    with Standin() as s:
        s.fail = ["garbage"] * 10
        search_args = dict(retries=2)
        with pytest.raises(RemoteError) as err:
            make(s, **search_args)
        assert "malformed JSON" in str(err.value) and "\n" not in str(err.value)


def test_connection_refused_is_one_line():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = OpenAIClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.0, timeout=2)
    with pytest.raises(RemoteError) as err:
        RemoteGenerator(client, "m").root("q")
    assert f"127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)
    assert err.value.transient and "--template" not in str(err.value)  # a server down: no misleading hint


def test_a_server_down_mid_eval_leaves_rows_a_resume_runs_again(tmp_path):
    from tts_tui.evaluate import Problem, read_rows, run_eval
    from tts_tui.session import RemoteSolver

    problems = [Problem(f"q{i}", f"What is {i}*7?", "42") for i in range(2)]
    with Standin() as s:
        solver = RemoteSolver(s.url, "standin")
        solver.client.retries, solver.client.backoff = 1, 0.0
        solver._caps = True  # probed already
        solver.check = lambda *a: None
        s.fail = [503] * 4  # the first problem's template call fails twice, then the second's
        run_eval(problems, ["cot"], [1], SearchParams(), lambda p, st, q: solver.solve(p, st, q), tmp_path, 64)
        rows = read_rows(tmp_path / "log.jsonl")
        assert all(r.get("failed") and r.get("transient") for r in rows)
        rows = run_eval(problems, ["cot"], [1], SearchParams(), lambda p, st, q: solver.solve(p, st, q), tmp_path, 64)
        assert not any(r.get("failed") for r in rows)  # the resume ran them again, no --retry-failed


def test_bad_urls_are_refused_at_once():
    for url in ("localhost:8080", "http://127.0.0.1:port", "ftp://x"):
        with pytest.raises(RemoteError) as err:
            OpenAIClient(url)
        assert not err.value.transient
    client = OpenAIClient("http://user:pw@127.0.0.1:9/v1?api-key=s3cret", retries=0, timeout=1)
    with pytest.raises(RemoteError) as err:
        client.get("/v1/models")
    assert "s3cret" not in str(err.value) and "pw" not in str(err.value) and "127.0.0.1:9" in str(err.value)


def test_one_failing_branch_stops_the_others():
    with Standin(depth=60) as s:
        client = OpenAIClient(s.url, retries=0, backoff=0.0)
        gen = RemoteGenerator(client, "standin", concurrency=4)
        search = Search(gen, "What is 6*7?", SearchParams(n=4, budget=100000, max_steps=60), MathAnswers(),
                        ConfidenceScorer())
        sent = len(s.bodies)
        s.fail = [500]  # the first step request fails
        with pytest.raises(RemoteError):
            search.expand([search.tree.root] * 4, max_steps=60)
        assert len(s.bodies) - sent <= 1 + 2 * 4  # not the others' 60 steps each


def test_a_cancel_reaches_branches_waiting_for_their_turn():
    import threading

    with Standin(depth=60) as s:
        client = OpenAIClient(s.url, backoff=0.0)
        gen = RemoteGenerator(client, "standin", concurrency=2)
        cancel = threading.Event()
        search = Search(gen, "What is 6*7?", SearchParams(n=8, budget=100000, max_steps=60), MathAnswers(),
                        ConfidenceScorer(), cancel=cancel)
        sent = len(s.bodies)
        orig = s.completion

        def completion(body):
            if len(s.bodies) - sent >= 4:
                cancel.set()
            return orig(body)

        s.completion = completion
        paths = search.expand([search.tree.root] * 8, max_steps=60)
        assert len(s.bodies) - sent <= 4 + 2  # the two in flight at the cancel, no more
        assert all(p[-1].finish == "cancelled" for p in paths if p)


def test_a_branch_at_its_length_on_a_delimiter_ends_there_not_as_unanswered():
    from tts_tui.backends.openai.generator import RemoteState
    from tts_tui.backends.protocol import Expand, SamplingParams, StopRule

    class Recorded:
        base_url = shown = "http://recorded"

        def post(self, path, body, stop=None):
            return {"choices": [{"text": "We add 4 and 5", "finish_reason": "stop", "stop_reason": "\n\n"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 4}}

    gen = RemoteGenerator(Recorded(), "m")
    rule = StopRule(max_steps=8, max_total=4, answer_stop=False)
    steps = gen.expand([Expand(RemoteState("p"), SamplingParams(), rule)], budget=100, should_stop=lambda: False,
                       on_step=lambda r: None)[0]
    assert [(x.finish, x.ended) for x in steps] == [("length", True)]  # as the engine: no empty "budget" step


def test_a_step_that_no_longer_fits_the_context_ends_the_branch():
    from tts_tui.backends.openai.generator import RemoteState
    from tts_tui.backends.protocol import Expand, SamplingParams, StopRule

    class Full:
        base_url = shown = "http://recorded"
        calls = 0

        def post(self, path, body, stop=None):
            Full.calls += 1
            if Full.calls == 1:
                return {"choices": [{"text": "Step 1.", "finish_reason": "stop", "stop_reason": "\n\n"}],
                        "usage": {"completion_tokens": 3}}
            err = RemoteError("http://recorded/v1/completions: the server answered 400 This model's maximum "
                              "context length is 2048 tokens")
            err.status = 400
            raise err

    gen = RemoteGenerator(Full(), "m")
    steps = gen.expand([Expand(RemoteState("p"), SamplingParams(), StopRule(max_steps=8))], budget=100,
                       should_stop=lambda: False, on_step=lambda r: None)[0]
    assert [x.finish for x in steps] == ["delimiter", "context"] and steps[-1].ended


def test_a_timeout_is_retried_and_reported():
    with Standin() as s:
        s.fail = ["slow", "slow"]
        client = OpenAIClient(s.url, retries=1, backoff=0.0, timeout=0.5)
        with pytest.raises(RemoteError, match="no usable answer after 2 tries"):
            RemoteGenerator(client, "m").root("q")


def test_the_api_key_goes_in_a_header_and_nowhere_else():
    with Standin() as s:
        search, gen = make(s, key="sk-secret-123")
        run_strategy("majority", search)
        assert all(h.get("Authorization") == "Bearer sk-secret-123" for h in s.headers)
        assert "sk-secret" not in repr(gen.client) and "sk-secret" not in str(search.tree.to_dict())
        s.fail = [401]
        with pytest.raises(RemoteError) as err:
            gen.client.post("/v1/completions", {"prompt": "x"})
        assert "401" in str(err.value) and "sk-secret" not in str(err.value)


def test_the_judge_reads_a_and_b_from_top_logprobs():
    with Standin() as s:
        _, gen = make(s)
        p = gen.compare("q", [("so \\boxed{42}", "so \\boxed{41}"), ("so \\boxed{41}", "so \\boxed{42}")])
        assert p[0] > 0.8 and p[1] < 0.2


def test_tts_solve_against_the_server(tmp_path):
    import json
    import os
    import subprocess
    import sys

    with Standin() as s:
        env = {**os.environ, "MY_KEY": "sk-abc"}
        proc = subprocess.run([sys.executable, "-m", "tts_tui", "solve", "What is 6*7?", "--backend", "openai",
                               "--base-url", s.url, "--model", "standin", "--api-key-env", "MY_KEY",
                               "--strategy", "majority", "--n", "4", "--json"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout)
        assert record["result"]["answer"] == "42" and "sk-abc" not in proc.stdout + proc.stderr
        bad = subprocess.run([sys.executable, "-m", "tts_tui", "solve", "q", "--backend", "openai", "--base-url",
                              s.url, "--model", "standin", "--verifier", "probe"], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and "hidden states" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_runs_problems_concurrently_and_stays_resumable(tmp_path):
    from tts_tui.evaluate import Problem, read_rows, run_eval
    from tts_tui.session import RemoteSolver

    problems = [Problem(f"p{i}", f"What is {i}*7?", "42") for i in range(6)]
    with Standin() as s:
        solver = RemoteSolver(s.url, "standin", concurrency=4)
        solve = lambda problem, strategy, params: solver.solve(problem, strategy, params)  # noqa: E731
        rows = run_eval(problems, ["majority"], [4], SearchParams(m=1, max_steps=8), solve, tmp_path, 64,
                        concurrency=3)
        assert sorted(r["id"] for r in rows) == sorted(p.id for p in problems)
        assert all(r["answer"] == "42" for r in rows)
        before = len(s.bodies)
        again = run_eval(problems, ["majority"], [4], SearchParams(m=1, max_steps=8), solve, tmp_path, 64,
                         concurrency=3)
        assert len(s.bodies) == before and len(again) == 6  # nothing redone
        assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 6 == len(read_rows(tmp_path / "log.jsonl"))


def test_tts_eval_against_two_servers_concurrently(tmp_path):
    import json
    import subprocess
    import sys

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i}*7?", "answer": "42"}) + "\n"
                            for i in range(4)))
    with Standin() as a, Standin() as b:
        proc = subprocess.run([sys.executable, "-m", "tts_tui", "eval", "--data", str(data), "--strategy",
                               "majority", "--n", "2", "--backend", "openai", "--base-url", f"{a.url},{b.url}",
                               "--model", "standin", "--concurrency", "2", "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "per minute" in proc.stderr and "majority" in proc.stdout
        # both servers took problems (a step request has a seed; the capability probe's have none)
        assert any("seed" in x for x in a.bodies) and any("seed" in x for x in b.bodies)
        rows = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
        assert len({r["id"] for r in rows}) == 4 and all(r["backend"] == "openai" for r in rows)


def test_endpoints_add_list_check_and_solve_by_name(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TTS_CONFIG_DIR": str(tmp_path / "cfg")}

    def tts(*args):
        return subprocess.run([sys.executable, "-m", "tts_tui", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    with Standin() as s:
        assert tts("endpoints", "add", "local", "--base-url", s.url, "--model", "standin").returncode == 0
        assert "local" in tts("endpoints", "list").stdout
        check = tts("endpoints", "check", "local")
        assert check.returncode == 0 and "logprobs: yes" in check.stdout and "chat template (/apply-template): yes" \
            in check.stdout
        solved = tts("solve", "What is 6*7?", "--endpoint", "local", "--strategy", "majority", "--n", "2")
        assert solved.returncode == 0 and "answer: 42" in solved.stdout
    missing = tts("solve", "q", "--endpoint", "nope")
    assert missing.returncode == 2 and "no endpoint named 'nope'" in missing.stderr


def test_a_server_without_logprobs_is_refused_for_confidence():
    from tts_tui.backends.openai.capabilities import Capabilities

    caps = Capabilities(continuation=True, logprobs=False, template=True)
    assert "logprobs" in caps.refuse("majority", "confidence")
    assert "top logprobs" in Capabilities(continuation=True, logprobs=True, template=True).refuse("bracket", "confidence")
    assert Capabilities(continuation=True, logprobs=True, top_logprobs=True,
                        template=True).refuse("bracket", "confidence") is None


def test_deepconf_signals_and_adaptive_votes_work_remotely():
    from tts_tui.search.protocol import AdaptiveParams
    from tts_tui.verify.scorers import DeepConfScorer

    with Standin() as s:
        search, _ = make(s, SearchParams(n=8, budget=4000, max_steps=8, adaptive=AdaptiveParams(wave=4)),
                         scorer=DeepConfScorer())
        result = run_strategy("weighted", search)
        # the stand-in's "41" samples are its most confident (top logprobs -0.3 each): they win a deepconf vote
        assert result.answer == "41" and result.stats["samples_used"] <= 8
        assert any(b.get("logprobs") == 20 for b in s.bodies)  # the top 20 asked for
        conf = [c for n in search.tree.nodes.values() for c in n.meta.get("conf", [])]
        assert conf and all(c > 0 for c in conf)


def test_a_truncated_answer_is_retried():
    with Standin() as s:
        s.fail = ["truncated"]
        search, _ = make(s, SearchParams(n=1, budget=1000, max_steps=8))
        assert run_strategy("cot", search).answer == "42"
        s.fail = ["truncated"] * 10
        client = OpenAIClient(s.url, retries=1, backoff=0.0)
        with pytest.raises(RemoteError, match="truncated answer"):
            client.post("/v1/completions", {"prompt": "x"})


# Response shapes of the other servers, as their documentation shows them (vLLM's and
# SGLang's completions), since neither can run on these machines.
VLLM_STOP = {"id": "cmpl-1", "object": "text_completion", "model": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
             "choices": [{"index": 0, "text": "We add 48 and 24", "finish_reason": "stop", "stop_reason": "\n\n",
                          "logprobs": {"text_offset": [0, 2, 6, 9, 13], "token_logprobs": [-0.1, -0.2, -0.3, -0.05, -0.4],
                                       "tokens": ["We", " add", " 48", " and", " 24"],
                                       "top_logprobs": [{"We": -0.1, "So": -2.5}, {" add": -0.2}, {" 48": -0.3},
                                                        {" and": -0.05}, {" 24": -0.4, " 25": -1.5}]}}],
             "usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}}
VLLM_EOS = {"choices": [{"index": 0, "text": "So \\boxed{72}.", "finish_reason": "stop", "stop_reason": None,
                         "logprobs": {"token_logprobs": [-0.1, -0.2], "tokens": ["So", " \\boxed{72}."],
                                      "top_logprobs": [{"So": -0.1}, {" \\boxed{72}.": -0.2}]}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 3}}
SGLANG_EOS = {"choices": [{"index": 0, "text": "72", "finish_reason": "stop", "matched_stop": 151645,
                           "logprobs": {"token_logprobs": [-0.3], "tokens": ["72"], "top_logprobs": [{"72": -0.3}]}}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 1}}


@pytest.mark.parametrize("resp, kind", [(VLLM_STOP, "word"), (VLLM_EOS, "eos"), (SGLANG_EOS, "eos")])
def test_the_other_servers_shapes_are_read(resp, kind):
    from tts_tui.backends.openai.generator import _confidences, _stop_kind, _token_logprobs

    choice = resp["choices"][0]
    assert _stop_kind(choice["finish_reason"], choice, resp) == (kind, "\n\n" if kind == "word" else None)
    ids, lps = _token_logprobs(choice["logprobs"], None)
    assert lps == choice["logprobs"]["token_logprobs"] and ids == [-1] * len(lps)  # no ids in this shape
    confs = _confidences(choice["logprobs"], 20)
    assert len(confs) == len(lps) and all(c > 0 for c in confs)


def test_a_vllm_step_is_a_delimiter_step_with_its_usage_count():
    from tts_tui.backends.openai.generator import RemoteGenerator
    from tts_tui.backends.protocol import SamplingParams, StopRule

    class Recorded:
        base_url = shown = "http://recorded"

        def post(self, path, body, stop=None):
            return VLLM_STOP

    gen = RemoteGenerator(Recorded(), "m")
    piece, ids, lps, confs, kind, n = gen._complete("prompt", 64, SamplingParams(), StopRule(), seed=1)
    assert piece == "We add 48 and 24\n\n" and kind == "delimiter" and n == 6  # the delimiter's token counted
    assert len(ids) == 6 and len(lps) == 5  # ... but it has no logprob


def test_the_self_judge_runs_remotely_from_yes_no_logprobs():
    from tts_tui.session import RemoteSolver

    with Standin() as s:
        solver = RemoteSolver(s.url, "standin", concurrency=4)
        result, search = solver.solve("What is 6*7?", "beam", SearchParams(n=4, m=2, budget=4000, max_steps=8),
                                      "self-judge")
        judged = [n for n in search.tree.nodes.values() if "self-judge" in n.scores]
        assert result.answer in ("41", "42") and judged and all(0 <= n.scores["self-judge"] <= 1 for n in judged)
        assert any(n.scores["self-judge"] > 0.5 for n in judged)  # Yes read from the top logprobs
        assert any("Is the last step of this solution correct?" in b.get("prompt", "") for b in s.bodies)


@pytest.mark.parametrize("named, stops, piece_ends, kind", [
    ("</answer>", ("</answer>",), "24</answer>", "stop"),  # the server names the rule's stop string
    ("\n\n", ("</answer>",), "24\n\n", "delimiter"),  # ... or the delimiter
    (None, (), "24\n\n", "delimiter"),  # named by none: with no other stop string, the delimiter
    (None, ("</answer>",), "24\n\n", "delimiter"),  # ambiguous: the step ends, the branch goes on
])
def test_the_stop_string_a_server_matched_decides_how_the_step_ends(named, stops, piece_ends, kind):
    from tts_tui.backends.openai.generator import RemoteGenerator, RemoteState
    from tts_tui.backends.protocol import Expand, SamplingParams, StopRule

    reply = {"choices": [{"text": "We add 48 and 24", "finish_reason": "stop", "stop_reason": named}],
             "usage": {"prompt_tokens": 9, "completion_tokens": 6}}
    if named is None:  # a server that says neither which string nor EOS
        reply["choices"][0].pop("stop_reason")

    class Recorded:
        base_url = shown = "http://recorded"

        def post(self, path, body, stop=None):
            assert body["stop"] == ["\n\n", *stops]
            return reply

    gen = RemoteGenerator(Recorded(), "m")
    rule = StopRule(stop=stops, max_steps=2, answer_stop=False)
    steps = gen.expand([Expand(RemoteState("p"), SamplingParams(), rule)], budget=100, should_stop=lambda: False,
                       on_step=lambda r: None)[0]
    assert steps[0].text.endswith(piece_ends) and steps[0].finish == kind
    assert len(steps) == (1 if kind == "stop" else 2)  # a delimiter step leaves the branch its next step


# -- the review's findings: keys, cancels, timeouts, counts under concurrency, slots ------------

def test_a_key_from_a_file_loses_its_newline_and_a_key_no_header_carries_is_one_line():
    with Standin() as s:
        client = OpenAIClient(s.url, api_key="sk-abc\n", retries=0)
        client.post("/v1/completions", {"model": "m", "prompt": "1,", "max_tokens": 1})
        assert s.headers[-1]["Authorization"] == "Bearer sk-abc"
    for bad in ("sk-a\x00b", "sk-a\nb", "sk-é"):
        with pytest.raises(RemoteError) as err:
            OpenAIClient("http://127.0.0.1:9", api_key=bad)
        assert "sk-" not in str(err.value) and "\n" not in str(err.value)


def test_a_cancel_ends_the_retries_and_their_backoff_at_once():
    import threading
    import time

    from tts_tui.backends.openai.client import Cancelled

    with Standin() as s:
        s.fail = [503] * 50
        client = OpenAIClient(s.url, retries=6, backoff=2.0)  # 2 + 4 + 8 ... seconds of backoff
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        t0 = time.monotonic()
        with pytest.raises(Cancelled):
            client.post("/v1/completions", {"prompt": "x"}, stop=stop.is_set)
        assert time.monotonic() - t0 < 1.5


def test_a_cancelled_search_ends_its_branches_as_cancelled_while_the_server_refuses():
    import threading
    import time

    with Standin() as s:
        search, gen = make(s, SearchParams(n=4, m=2, budget=4000, max_steps=8))
        gen.client.retries, gen.client.backoff = 8, 1.0
        s.fail = [503] * 200
        threading.Timer(0.5, search.cancel.set).start()
        t0 = time.monotonic()
        search.expand([search.tree.root] * 4, max_steps=8)  # ends, without an error
        assert time.monotonic() - t0 < 3.0  # not the 255 s of backoff eight retries could take
        assert len(s.bodies) <= 4 * 3  # each branch stopped within its first few tries


def test_a_server_that_times_out_twice_is_not_tried_again():
    with Standin() as s:
        s.fail = ["slow"] * 5
        client = OpenAIClient(s.url, retries=4, backoff=0.0, timeout=0.5)
        with pytest.raises(RemoteError, match="after 2 tries") as err:
            client.post("/v1/completions", {"prompt": "x"})
        assert err.value.transient and len(s.bodies) == 2


def test_solves_side_by_side_each_count_only_their_own_requests():
    from concurrent.futures import ThreadPoolExecutor

    from tts_tui.session import RemoteSolver

    params = SearchParams(n=4, m=2, budget=4000, max_steps=8, seed=5)
    problems = ["What is 6*7?", "What is 6*7? Think about it carefully, step by step, before answering."]
    with Standin() as s:
        solver = RemoteSolver(s.url, "standin")
        alone = [solver.solve(p, "beam", params)[0].stats for p in problems]
        total0 = solver.generator.stats()["prompt_tokens"]
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda p: solver.solve(p, "beam", params)[0].stats, problems))
        for a, b in zip(alone, both):
            assert a["prompt_tokens"] == b["prompt_tokens"] > 0 and a["requests"] == b["requests"]
        assert alone[0]["prompt_tokens"] != alone[1]["prompt_tokens"]  # the test tells them apart
        # the session's totals still hold every request
        assert solver.generator.stats()["prompt_tokens"] - total0 == sum(b["prompt_tokens"] for b in both)


def test_bracket_counts_its_judge_prompts():
    from tts_tui.session import RemoteSolver

    with Standin() as s:
        solver = RemoteSolver(s.url, "standin")
        result, _ = solver.solve("What is 6*7?", "bracket", SearchParams(n=4, budget=4000, max_steps=8))
        assert result.stats["judge_prompt_tokens"] > 0
        assert result.tokens == result.stats["generated_tokens"]  # the judge's one-token answers are not the search's


def test_a_malformed_usage_counts_as_none_not_a_traceback():
    class Odd:
        shown = "http://odd"

        def post(self, path, body, stop=None):
            return {"choices": [{"text": "So the answer is \\boxed{42}.", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": "many", "completion_tokens": 3, "prompt_tokens_details": []}}

    gen = RemoteGenerator(Odd(), "m", template="chatml")
    search = Search(gen, "What is 6*7?", SearchParams(n=1, budget=100, max_steps=4), MathAnswers(), ConfidenceScorer())
    assert run_strategy("cot", search).answer == "42"
    assert gen.stats()["prompt_tokens"] == 0 and gen.stats()["generated_tokens"] == 3


def test_a_server_without_a_template_is_refused_unless_the_client_renders_one():
    from tts_tui.backends.openai.capabilities import Capabilities

    caps = Capabilities(continuation=True, logprobs=True, top_logprobs=True, template=False)
    assert "--template chatml" in caps.refuse("cot", "confidence")
    assert caps.refuse("cot", "confidence", own_template=True) is None
    assert "top logprobs" in Capabilities(continuation=True, logprobs=True, template=True).refuse("auto", "confidence")


def test_yes_and_space_yes_add_up_in_the_judges_reading():
    import math

    from tts_tui.backends.openai.generator import _first_top

    top = _first_top({"content": [{"top_logprobs": [{"token": "Yes", "logprob": math.log(0.4)},
                                                    {"token": " Yes", "logprob": math.log(0.3)},
                                                    {"token": "No", "logprob": math.log(0.2)}]}]})
    assert math.exp(top["Yes"]) == pytest.approx(0.7) and math.exp(top["No"]) == pytest.approx(0.2)


def test_no_more_requests_in_flight_than_the_server_has_slots():
    import threading
    import time

    from tts_tui.backends.openai.client import Cancelled
    from tts_tui.backends.openai.generator import _Slots

    slots, now, peak = _Slots(), [0], [0]
    slots.set(2)
    lock = threading.Lock()

    def one() -> None:
        with slots.hold():
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(0.05)
            with lock:
                now[0] -= 1

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    with slots.hold(), slots.hold():  # both taken: a waiter that is stopped gives up
        with pytest.raises(Cancelled):
            with slots.hold(stop=lambda: True):
                pass


def test_a_branch_that_never_ran_does_not_hold_the_others_at_a_stop():
    import time

    from tts_tui.backends.openai.generator import _Rounds

    import threading

    rounds = _Rounds(2, 2)
    with rounds.turn(0, lambda: False):
        pass  # branch 0 has had one turn; branch 1 never runs (its thread was cancelled)

    def second_turn() -> None:
        with rounds.turn(0, lambda: True):  # without the stop it would wait for branch 1 forever
            pass

    waiter = threading.Thread(target=second_turn, daemon=True)
    t0 = time.monotonic()
    waiter.start()
    waiter.join(2.0)
    assert not waiter.is_alive() and time.monotonic() - t0 < 1.0


def test_eval_rows_of_a_server_carry_its_prompt_and_cached_tokens(tmp_path):
    from tts_tui.evaluate import Problem, run_eval
    from tts_tui.session import RemoteSolver

    with Standin() as s:
        solver = RemoteSolver(s.url, "standin")
        rows = run_eval([Problem("p", "What is 6*7?", "42")], ["beam"], [4], SearchParams(m=2, max_steps=8),
                        lambda p, st, q: solver.solve(p, st, q), tmp_path, 64)
    row, = rows
    assert row["server_prompt_tokens"] > 0 and row["server_requests"] > 0 and row["server_cached_tokens"] > 0
    assert row["prefill_tokens"] == row["server_prompt_tokens"] - row["server_cached_tokens"]


def test_the_tui_connects_an_endpoint_with_its_prm():
    from tts_tui.tui.endpoints import connect

    with Standin() as policy, Standin(pools=True) as prm:
        solver = connect("gpu", {"base_url": policy.url, "model": "standin", "prm_url": prm.url, "prm": "prm"})
        assert solver.scorer("prm") is solver._prm


def test_a_dead_server_in_the_list_is_passed_over_while_another_answers():
    from tts_tui.cli.eval_cmd import _RoundRobin

    a, b = object(), object()
    pick = _RoundRobin([a, b])
    assert {pick.next(), pick.next()} == {a, b}  # in turn
    pick.failed(b, True)
    pick.failed(b, True)  # b: twice unreachable
    picks = [pick.next() for _ in range(16)]
    assert picks.count(b) == 2  # only its every-8th retry
    pick.failed(b, False)  # it answered: back in turn
    assert {pick.next(), pick.next()} == {a, b}
