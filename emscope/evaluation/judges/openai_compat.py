"""A judge behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server ...).

Asks for one token with the top 20 log-probabilities and applies the protocol's rule. An
endpoint that gives no log-probabilities (or rejects the parameter) is switched to reading
a number from a short reply, and every such judgment says ``method="parsed"``.

The API key is read from the environment (`api_key_env`, default ``OPENAI_API_KEY``) and
is never stored in the judge's spec, a result or a log. Requests run with bounded
concurrency; timeouts, connection errors, 429 and 5xx are retried with exponential backoff
(honouring ``Retry-After``); a malformed reply is retried, then recorded as unscored.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from emscope.errors import EmscopeError, MissingDependencyError, require
from emscope.evaluation.judges.base import Judge, Judgment
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
    timeout_s: float = 60.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return base * (0.5 + random.random() / 2)


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
        try:
            require("openai", extra="judge")
        except MissingDependencyError:
            raise
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
        key = os.environ.get(api_key_env)
        if not key:
            if self.base_url and any(h in self.base_url for h in _LOCAL_HOSTS):
                key = "not-needed"  # local servers ignore the key
            else:
                raise EmscopeError(
                    f"the judge endpoint {self.base_url or 'api.openai.com'} needs an API key: "
                    f"set the environment variable {api_key_env} (it is never written to any output)"
                )
        self._openai = openai
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.retry.timeout_s)

    def score_prompts(self, prompts: Sequence[str]) -> list[Judgment]:
        if not prompts:
            return []
        first = self._judge_one(prompts[0])  # settles whether the endpoint gives log-probabilities
        if len(prompts) == 1:
            return [first]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            rest = list(pool.map(self._judge_one, prompts[1:]))
        return [first, *rest]

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
                return Judgment.unscored(f"request failed: 400 {str(e)[:160]}", "logprobs" if with_lp else "parsed")
            except (o.APITimeoutError, o.APIConnectionError, o.RateLimitError, o.InternalServerError) as e:
                last = f"{type(e).__name__}: {str(e)[:160]}"
                retry_after = _retry_after(e)
            except o.APIStatusError as e:
                if e.status_code < 500 and e.status_code != 429:
                    return Judgment.unscored(f"request failed: {e.status_code} {str(e)[:160]}", "logprobs")
                last, retry_after = f"HTTP {e.status_code}", _retry_after(e)
            except (_Malformed, o.APIResponseValidationError, ValueError) as e:
                if attempt >= self.retry.max_retries:
                    return Judgment.unscored("malformed reply", "logprobs" if with_lp else "parsed", error=str(e)[:200])
                last, retry_after = f"malformed: {e}", None
            if attempt >= self.retry.max_retries:
                return Judgment.unscored(f"request failed after {attempt + 1} attempts: {last}", "logprobs")
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
