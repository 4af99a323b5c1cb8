"""A judge behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server ...).

Asks for one token with the top 20 log-probabilities and applies the protocol's rule. An
endpoint that gives no log-probabilities (or rejects the parameter) is switched to reading
a number from a short reply, and every such judgment says ``method="parsed"``.

The API key is read from the environment (`api_key_env`, default ``OPENAI_API_KEY``) and
is never stored in the judge's spec, a result or a log: every error text is redacted
(`emscope.evaluation.judges.redaction`) before it becomes an unscored reason or a log line.
Requests run with bounded concurrency; timeouts, connection errors, 429 and 5xx are
retried with exponential backoff (honouring ``Retry-After``); a malformed reply is retried,
then recorded as unscored. Each request waits at most `RetryPolicy.timeout_s` and is tried
``1 + max_retries`` times; after `RetryPolicy.give_up_after` answers in a row whose requests
all failed, the remaining answers are marked unscored at once instead of each paying the
full retry budget against a server that is down (no failure is cached: a re-run retries).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from emscope.errors import ConfigError, EmscopeError, require
from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.judges.redaction import redact
from emscope.evaluation.judges.scoring import aggregate_top_logprobs, parse_number

log = logging.getLogger(__name__)
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "0.0.0.0")


class _Malformed(Exception):
    pass


@dataclass
class RetryPolicy:
    max_retries: int = 4  # after the first attempt
    backoff_s: float = 1.0  # first wait; doubles each retry, with jitter
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0  # per request
    give_up_after: int = 3  # answers in a row whose every request failed: skip the rest (0: never)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.timeout_s <= 0 or self.give_up_after < 0:
            raise ConfigError(
                f"judge retries must be >= 0 and the timeout > 0 s, got retries={self.max_retries}, "
                f"timeout={self.timeout_s}, give_up_after={self.give_up_after}"
            )

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return base * (0.5 + random.random() / 2)


def api_key(base_url: str | None, api_key_env: str = "OPENAI_API_KEY") -> str:
    """The key from `api_key_env`; raises with the fix when a remote endpoint has none (local servers need none)."""
    key = os.environ.get(api_key_env)
    if key:
        return key
    if base_url and any(h in base_url for h in _LOCAL_HOSTS):
        return "not-needed"  # local servers ignore the key
    raise EmscopeError(
        f"the judge endpoint {base_url or 'api.openai.com'} needs an API key: "
        f"set the environment variable {api_key_env} (it is never written to any output)"
    )


class OpenAICompatJudge(Judge):
    """`model` at `base_url` (None: the official OpenAI API, or ``$OPENAI_BASE_URL``)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        top_logprobs: int = 20,
        parse_max_tokens: int = 8,
    ) -> None:
        require("openai", extra="judge")
        import openai

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.spec = f"openai:{model}" + (f"@{self.base_url}" if self.base_url else "")
        self.concurrency = max(1, concurrency)
        self.retry = retry or RetryPolicy()
        self.top_logprobs = top_logprobs
        self.parse_max_tokens = parse_max_tokens
        self.logprobs_supported: bool | None = None  # learnt from the first reply
        self.calls = 0  # HTTP requests made, retries included
        self._failed_in_a_row = 0  # answers whose every request failed, since the last reply
        self._lock = threading.Lock()
        key = api_key(self.base_url, api_key_env)
        self._secrets = (key,)  # redacted from every error text
        self._openai = openai
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.retry.timeout_s)

    def score_prompts(self, prompts: Sequence[str]) -> list[Judgment]:
        out: list[Judgment | None] = [None] * len(prompts)
        for i, j in self.iter_scores(prompts):
            out[i] = j
        return [j for j in out if j is not None]

    def iter_scores(self, prompts: Sequence[str], chunk: int = 32) -> Iterator[tuple[int, Judgment]]:
        """Each judgment as its reply arrives (at most `concurrency` requests in flight).

        Closing the iterator early (a killed run) cancels the requests not yet sent.
        """
        if not prompts:
            return
        yield 0, self._judge_one(prompts[0])  # settles whether the endpoint gives log-probabilities
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            pending: dict[Future[Judgment], int] = {}
            queue = iter(range(1, len(prompts)))
            for i in queue:  # keep `concurrency` requests in flight, no more (a kill then wastes little)
                pending[pool.submit(self._judge_one, prompts[i])] = i
                if len(pending) >= self.concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    i = pending.pop(f)
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(self._judge_one, prompts[nxt])] = nxt
                    yield i, f.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _unscored(self, reason: str, method: str, **detail: Any) -> Judgment:
        return Judgment.unscored(redact(reason, self._secrets), method, **detail)

    def _text(self, e: Exception, limit: int = 160) -> str:
        """An exception's text, redacted, then cut to `limit` characters (a cut must not leave half a key)."""
        return redact(str(e), self._secrets)[:limit]

    def _request(self, prompt: str, with_logprobs: bool) -> Any:
        self.calls += 1
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "seed": 0,
        }
        if with_logprobs:
            kw.update(max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        else:
            kw.update(max_tokens=self.parse_max_tokens)
        return self._client.chat.completions.create(**kw)

    def _interpret(self, resp: Any, with_logprobs: bool) -> Judgment | None:
        """A judgment from a reply; None when the reply has no log-probabilities (switch mode)."""
        try:
            choice = resp.choices[0]
            content = choice.message.content
        except (AttributeError, IndexError, TypeError, KeyError):
            raise _Malformed("no choices[0].message in the reply") from None
        if with_logprobs:
            lp = getattr(choice, "logprobs", None)
            items = getattr(lp, "content", None) if lp is not None else None
            if not items:
                return None
            try:
                top = [(t.token, float(t.logprob)) for t in items[0].top_logprobs]
            except (AttributeError, TypeError, ValueError):
                raise _Malformed("logprobs.content[0].top_logprobs is not a list of {token, logprob}") from None
            if not top:
                return None
            return aggregate_top_logprobs(top)
        if not isinstance(content, str):
            raise _Malformed("message.content is not a string")
        return parse_number(content)

    def _judge_one(self, prompt: str) -> Judgment:
        give_up = self.retry.give_up_after
        if give_up and self._failed_in_a_row >= give_up:
            return self._unscored(
                f"request failed: not sent, the judge failed {self._failed_in_a_row} answers in a row", "logprobs"
            )
        j = self._attempts(prompt)
        with self._lock:
            if (j.unscored_reason or "").startswith("request failed"):
                self._failed_in_a_row += 1
                if self._failed_in_a_row == give_up:
                    log.warning(
                        "%s failed %d answers in a row (last: %s): the rest are left unscored, not sent; "
                        "check the server (or --judge-timeout / --judge-retries) and re-run to judge them",
                        self.spec,
                        give_up,
                        j.unscored_reason,
                    )
            else:
                self._failed_in_a_row = 0
        return j

    def _attempts(self, prompt: str) -> Judgment:
        o = self._openai
        attempt, last = 0, "unknown"
        while True:
            with_lp = self.logprobs_supported is not False
            try:
                resp = self._request(prompt, with_lp)
                j = self._interpret(resp, with_lp)
                if j is None:
                    log.warning("%s returns no log-probabilities: reading numbers from replies instead", self.spec)
                    self.logprobs_supported = False
                    continue
                if with_lp:
                    self.logprobs_supported = True
                return j
            except o.BadRequestError as e:
                if with_lp and self.logprobs_supported is None and "logprob" in str(e).lower():
                    self.logprobs_supported = False
                    continue
                return self._unscored(f"request failed: 400 {self._text(e)}", "logprobs" if with_lp else "parsed")
            except (o.APITimeoutError, o.APIConnectionError, o.RateLimitError, o.InternalServerError) as e:
                last = f"{type(e).__name__}: {self._text(e)}"
                retry_after = _retry_after(e)
            except o.APIStatusError as e:
                if e.status_code < 500 and e.status_code != 429:
                    return self._unscored(f"request failed: {e.status_code} {self._text(e)}", "logprobs")
                last, retry_after = f"HTTP {e.status_code}", _retry_after(e)
            except (_Malformed, o.APIResponseValidationError, ValueError) as e:
                if attempt >= self.retry.max_retries:
                    return self._unscored(
                        "malformed reply", "logprobs" if with_lp else "parsed", error=self._text(e, 200)
                    )
                last, retry_after = f"malformed: {self._text(e)}", None
            if attempt >= self.retry.max_retries:
                return self._unscored(f"request failed after {attempt + 1} attempts: {last}", "logprobs")
            log.debug("%s: attempt %d failed (%s); retrying", self.spec, attempt + 1, redact(last, self._secrets))
            time.sleep(self.retry.wait(attempt, retry_after))
            attempt += 1

    def close(self) -> None:
        self._client.close()


def _retry_after(e: Any) -> float | None:
    resp = getattr(e, "response", None)
    value = resp.headers.get("retry-after") if resp is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
