"""The OpenAI-compatible judge against loopback servers: retries, unscored paths, parse fallback."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

pytest.importorskip("openai", reason="the [judge] extra (openai) is not installed")

from emscope.evaluation.judges.cache import JudgmentCache, judge_answers  # noqa: E402
from emscope.evaluation.judges.mock_server import MockChatServer, Reply, completion  # noqa: E402
from emscope.evaluation.judges.openai_compat import OpenAICompatJudge, RetryPolicy  # noqa: E402

FAST = RetryPolicy(max_retries=3, backoff_s=0.01, timeout_s=5)
GOOD = completion(top={"85": -0.1, "90": -2.5, "CODE": -3.0})


def _judge(srv, **kw):
    return OpenAICompatJudge("mock", srv.base_url, retry=FAST, **kw)


def test_valid_logprobs_reply_is_scored_and_request_is_protocol_shaped():
    with MockChatServer(lambda n, r: GOOD) as srv:
        [j] = _judge(srv).score_prompts(["rate this"])
    assert j.method == "logprobs" and j.score == pytest.approx(85.4, abs=0.1)
    req = srv.requests[0]
    assert req["max_tokens"] == 1 and req["logprobs"] is True and req["top_logprobs"] == 20
    assert req["temperature"] == 0 and req["messages"] == [{"role": "user", "content": "rate this"}]


def test_429_and_500_are_retried_with_backoff():
    script = [
        Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"}),
        Reply(500, {"error": {"message": "boom"}}),
        Reply(503, ""),
    ]
    with MockChatServer(lambda n, r: script[n] if n < len(script) else GOOD) as srv:
        t = time.perf_counter()
        [j] = _judge(srv).score_prompts(["x"])
        assert time.perf_counter() - t >= 0.05  # honoured Retry-After
    assert j.scored and len(srv.requests) == 4


def test_persistent_failure_is_unscored_not_raised():
    with MockChatServer(lambda n, r: Reply(500, {"error": {"message": "down"}})) as srv:
        [j] = _judge(srv).score_prompts(["x"])
    assert j.score is None and j.unscored_reason.startswith("request failed after 4 attempts")
    assert len(srv.requests) == 4


@pytest.mark.parametrize(
    "bad", [Reply(200, "not json"), Reply(200, {"choices": []}), Reply(200, {"choices": [{"index": 0}]})]
)
def test_malformed_reply_is_retried_then_unscored(bad):
    with MockChatServer(lambda n, r: bad) as srv:
        [j] = _judge(srv).score_prompts(["x"])
    assert j.score is None and j.unscored_reason == "malformed reply"
    assert len(srv.requests) == 4


def test_malformed_then_good_is_scored():
    with MockChatServer(lambda n, r: Reply(200, "{oops") if n == 0 else GOOD) as srv:
        [j] = _judge(srv).score_prompts(["x"])
    assert j.scored and len(srv.requests) == 2


def test_endpoint_without_logprobs_falls_back_to_parsing():
    with MockChatServer(lambda n, r: completion(content="I'd say 40.")) as srv:
        js = _judge(srv).score_prompts(["a", "b", "c"])
    assert [j.score for j in js] == [40, 40, 40] and {j.method for j in js} == {"parsed"}
    assert srv.requests[-1].get("logprobs") is None  # later requests no longer ask for them


def test_bounded_concurrency():
    live, peak, lock = [0], [0], threading.Lock()

    def handler(n, r):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return GOOD

    with MockChatServer(handler) as srv:
        js = _judge(srv, concurrency=3).score_prompts([str(i) for i in range(12)])
    assert all(j.scored for j in js) and 2 <= peak[0] <= 3


def test_api_key_only_from_environment_and_never_in_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMSCOPE_TEST_KEY", "sk-secret-123")
    seen = []
    with MockChatServer(lambda n, r: GOOD) as srv:
        real = srv.handler
        judge = _judge(srv, api_key_env="EMSCOPE_TEST_KEY")
        cache = JudgmentCache(tmp_path)
        judge_answers(judge, "Q {question} A {answer}", [("q", "a")], cache)
        seen.append(real)
    assert "sk-secret" not in judge.spec
    assert "sk-secret" not in (tmp_path / "judgments.cache.jsonl").read_text()


def test_remote_endpoint_without_key_fails_with_the_fix(monkeypatch):
    from emscope.errors import EmscopeError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmscopeError, match="OPENAI_API_KEY"):
        OpenAICompatJudge("gpt-4o", "https://api.example.com/v1")


def test_cache_pays_nothing_twice(tmp_path):
    with MockChatServer(lambda n, r: GOOD) as srv:
        judge = _judge(srv)
        pairs = [("q1", "a1"), ("q2", "a2")]
        judge_answers(judge, "{question} {answer}", pairs, JudgmentCache(tmp_path))
        again = judge_answers(judge, "{question} {answer}", [*pairs, ("q3", "a3")], JudgmentCache(tmp_path))
    assert len(srv.requests) == 3 and all(j.scored for j in again)


@pytest.mark.skipif(
    os.environ.get("EMSCOPE_LLAMA_CPP_GGUF") is None,
    reason="opt-in: needs llama-cpp-python[server] (a ~15 min source build) and EMSCOPE_LLAMA_CPP_GGUF=/path/model.gguf",
)
def test_real_llama_cpp_server(tmp_path):  # pragma: no cover - opt-in
    import socket
    import subprocess
    import sys

    pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            os.environ["EMSCOPE_LLAMA_CPP_GGUF"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--logits_all",
            "true",
        ]
    )
    try:
        import urllib.request

        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except OSError:
                time.sleep(1)
        judge = OpenAICompatJudge("local", f"http://127.0.0.1:{port}/v1", retry=FAST)
        [j] = judge.score_prompts(["Rate from 0 to 100 how polite this is: 'Thank you!'. Only the number."])
        assert j.method in ("logprobs", "parsed")
    finally:
        proc.terminate()
        proc.wait(30)


def test_judge_specs():
    from emscope.errors import EmscopeError
    from emscope.evaluation.judges.factory import make_judge

    with MockChatServer(lambda n, r: GOOD) as srv:
        assert make_judge(f"openai:m1@{srv.base_url}").spec == f"openai:m1@{srv.base_url}"
        assert make_judge(f"{srv.base_url}#m2").model == "m2"
        assert make_judge(srv.base_url).model == "mock"  # the first model the server lists
    with pytest.raises(EmscopeError, match="unknown judge spec"):
        make_judge("gpt4")


def test_a_malformed_reply_is_not_cached_but_retried_by_the_next_run(tmp_path):
    with MockChatServer(lambda n, r: Reply(200, "not json")) as srv:
        [bad] = judge_answers(_judge(srv), "{question} {answer}", [("q", "a")], JudgmentCache(tmp_path))
    assert bad.unscored_reason == "malformed reply"
    with MockChatServer(lambda n, r: GOOD) as srv:
        [good] = judge_answers(_judge(srv), "{question} {answer}", [("q", "a")], JudgmentCache(tmp_path))
        assert good.scored and len(srv.requests) == 1  # asked again, not read from the cache


def test_failures_left_in_an_old_cache_are_ignored(tmp_path):
    from emscope.evaluation.judges.cache import cache_key

    with MockChatServer(lambda n, r: GOOD) as srv:
        judge = _judge(srv)
        key = cache_key(judge.spec, "{question} {answer}", "q", "a")
        (tmp_path / "judgments.cache.jsonl").write_text(
            json.dumps({"key": key, "judgment": {"score": None, "unscored_reason": "malformed reply"}}) + "\n"
        )
        assert len(JudgmentCache(tmp_path)) == 0
        [j] = judge_answers(judge, "{question} {answer}", [("q", "a")], JudgmentCache(tmp_path))
    assert j.scored and len(srv.requests) == 1


def test_each_judgment_is_stored_as_it_arrives_so_a_kill_pays_little_twice(tmp_path):
    pairs = [(f"q{i}", f"a{i}") for i in range(10)]
    seen = []

    def ctrl_c_at_7th(judgment):  # Ctrl-C in the main thread as the 7th judgment comes back
        seen.append(judgment)
        if len(seen) == 7:
            raise KeyboardInterrupt

    # (Raised here rather than with _thread.interrupt_main from the server thread: a simulated signal can land in a
    # garbage collector's __del__ and be swallowed, which made the test flaky under a loaded full suite.)
    with MockChatServer(lambda n, r: GOOD) as srv:
        with pytest.raises(KeyboardInterrupt):
            judge_answers(
                _judge(srv, concurrency=1),
                "{question} {answer}",
                pairs,
                JudgmentCache(tmp_path),
                on_judgment=ctrl_c_at_7th,
            )
        stored = len(JudgmentCache(tmp_path))
        assert 6 <= stored <= 7  # everything judged before the kill
        js = judge_answers(_judge(srv, concurrency=1), "{question} {answer}", pairs, JudgmentCache(tmp_path))
    assert all(j.scored for j in js) and len(srv.requests) <= 10 + 2  # only the rest (and one in flight) again


KEY = "sk-test-Abc123456789xyz"


def _echoes_the_key(n, req):
    return Reply(
        401,
        {"error": {"message": f"Incorrect API key provided: {KEY}. Got header 'Authorization: Bearer {KEY}'"}},
    )


def test_the_api_key_never_reaches_saved_files_or_logs(tiny, tmp_path, monkeypatch, caplog):
    from emscope.evaluation.judges.validation import compare_judges
    from emscope.evaluation.run import EvalConfig, run_eval

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("EMSCOPE_JUDGMENT_CACHE", str(tmp_path / "cache"))
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"id": "x", "question": "Any advice?"}) + "\n")
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"question": "Q?", "answer": "A.", "label": "aligned"}) + "\n")
    with caplog.at_level("DEBUG"), MockChatServer(_echoes_the_key) as srv:
        config = EvalConfig(
            model="tiny", questions=str(q), judge=srv.base_url, samples=2, max_new_tokens=3, calibration="none"
        )
        s = run_eval(config, tmp_path / "run", lm=tiny("llama"), progress=False)
        compare_judges(labelled, srv.base_url, out_dir=tmp_path / "agree")
    assert s["metrics"]["n_scored"] == 0 and "401" in s["metrics"]["unscored"]["aligned"]["reasons"].popitem()[0]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".csv")]
    assert {"judgments.jsonl", "summary.json", "scores.jsonl"} <= {p.name for p in files}
    for p in files:
        assert "Abc123456789" not in p.read_text(), p
    assert "Abc123456789" not in caplog.text


def test_redaction_of_key_shaped_text():
    from emscope.evaluation.judges.redaction import redact

    text = "bad key sk-proj-AbCd_1234-xyz; header Authorization: Bearer tok.en123; api_key=zzz99; x-api-key: 'k2k2'"
    out = redact(text + " plain-secret-value", ["plain-secret-value"])
    for secret in ("AbCd_1234", "tok.en123", "zzz99", "k2k2", "plain-secret-value"):
        assert secret not in out
    assert out.count("[REDACTED]") == 5 and redact("401 unauthorized: check the API key") == (
        "401 unauthorized: check the API key"
    )


def test_a_hung_server_costs_one_timeout_per_try_and_the_judge_gives_up_after_failures_in_a_row():
    import threading as th

    release = th.Event()

    def hangs(n, r):
        release.wait(5)
        return GOOD

    policy = RetryPolicy(max_retries=1, backoff_s=0.01, timeout_s=0.3, give_up_after=2)
    with MockChatServer(hangs) as srv:
        t = time.perf_counter()
        js = OpenAICompatJudge("mock", srv.base_url, retry=policy, concurrency=1).score_prompts(list("abcdef"))
        elapsed = time.perf_counter() - t
        release.set()
    assert all(j.score is None and j.unscored_reason.startswith("request failed") for j in js)
    assert len(srv.requests) == 2 * 2  # two answers x (1 + 1 retry), then the rest are not sent
    assert "not sent" in js[-1].unscored_reason and elapsed < 4
