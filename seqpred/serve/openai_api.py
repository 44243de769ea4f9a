"""OpenAI's API on seqpred's engine: ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``.

The handlers only translate: an OpenAI request becomes the jobs that ``POST /generate`` would make
(``prompt`` is the prime, ``max_tokens`` the length in the run's tokens, ``temperature: 0`` greedy),
and the engine's events become OpenAI's response and chunk formats. A parameter seqpred cannot honour
is refused with a 400 naming it, never ignored.

Chat: the contents of ``messages`` in order, each followed by a line break, are the prime; the model
continues that text and the continuation is the assistant's message. A character model does not
follow instructions: it continues text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..sampling import SamplingSettings
from .app import MAX_SEED, Pending, Service, error_response, event_stream, sse
from .engine import Delta, Done, Sample, TokenScore
from .fields import BadRequest, Fields
from .limits import read_json

#: OpenAI's limit on the alternatives per token of ``logprobs``.
MAX_LOGPROBS = 5
#: OpenAI's default ``max_tokens`` for completions; chat defaults to ``seqpred generate``'s length.
COMPLETION_MAX_TOKENS = 16
CHAT_MAX_TOKENS = 200

SAMPLING_FIELDS = ("model", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options", "user")
SEQPRED_FIELDS = ("top_k", "unknown")
#: Known parameters seqpred cannot honour, with the value that means "not used".
UNSUPPORTED = {
    "suffix": None,
    "logit_bias": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
}
CHAT_UNSUPPORTED = {
    **{k: v for k, v in UNSUPPORTED.items() if k != "suffix"},
    "logprobs": False,
    "top_logprobs": None,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "response_format": None,
    "parallel_tool_calls": None,
}
COMPLETION_FIELDS = (
    *SAMPLING_FIELDS,
    *SEQPRED_FIELDS,
    *UNSUPPORTED,
    "prompt",
    "max_tokens",
    "echo",
    "logprobs",
    "best_of",
)
CHAT_FIELDS = (
    *SAMPLING_FIELDS,
    *SEQPRED_FIELDS,
    *CHAT_UNSUPPORTED,
    "messages",
    "max_tokens",
    "max_completion_tokens",
)


def openai_routes() -> list[Route]:
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]


def _model_card(service: Service) -> dict[str, Any]:
    return {
        "id": service.model_name,
        "object": "model",
        "created": int(service.started),
        "owned_by": "seqpred",
    }


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model_card(request.app.state.service)]})


async def get_model(request: Request) -> Response:
    service: Service = request.app.state.service
    name = request.path_params["model"]
    if name != service.model_name:
        return error_response(404, f"the model {name!r} does not exist", "model", "model_not_found")
    return JSONResponse(_model_card(service))


# -- request translation ----------------------------------------------------------------------


class _Common:
    """What completions and chat share: the model, sampling settings, n, stop, seed and streaming."""

    def __init__(self, service: Service, fields: Fields, unsupported: dict[str, Any]):
        self.service = service
        limits = service.limits
        model = fields.raw("model")
        if model is not None and model != service.model_name:
            raise BadRequest(
                f"the model {model!r} does not exist", "model", status=404, code="model_not_found"
            )
        for name, unused in unsupported.items():
            value = fields.raw(name)
            if value is not None and value != unused and value != {}:
                raise BadRequest(f"{name} is not supported by seqpred", name, code="unsupported_parameter")
        temperature = fields.number("temperature", 1.0, low=0, high=2)
        self.settings = SamplingSettings(
            temperature=temperature or 1.0,
            top_k=fields.integer("top_k", None, 1),
            top_p=fields.number("top_p", None, low=0, high=1, low_open=True),
            greedy=temperature == 0,
        )
        self.n = fields.integer("n", 1, 1, limits.max_streams)
        self.stop = fields.stop("stop", max_items=4)
        self.seed = fields.integer("seed", None, 0, MAX_SEED)
        self.stream = fields.boolean("stream", False)
        options = fields.raw("stream_options", {})
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise BadRequest("stream_options may only hold include_usage", "stream_options")
        self.include_usage = bool(options.get("include_usage", False))
        fields.string("user", "")
        self.unknown = fields.choice("unknown", "error", ("error", "skip", "replace"))
        self.id = uuid.uuid4().hex
        self.created = int(time.time())

    def job(self, prime: str, length: int, param: str, **extra: Any) -> dict[str, Any]:
        return dict(
            ids=self.service.start_tokens(prime, self.unknown, param),
            primed=bool(prime),
            length=length,
            settings=self.settings,
            seed=self.seed,
            num_samples=self.n,
            stop=self.stop,
            stream=self.stream,
            **extra,
        )

    def prompt_tokens(self, prime: str) -> int:
        return len(self.service.vocab.encode(prime, self.unknown)) if prime else 0

    def usage(self, prompt_tokens: int, samples: list[Sample]) -> dict[str, int]:
        completion = sum(s.tokens for s in samples)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }


def _logprobs(scores: list[TokenScore], start: int) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object of a completion choice; offsets count from ``start``."""
    offsets = []
    for score in scores:
        offsets.append(start)
        start += len(score.text)
    return {
        "tokens": [s.text for s in scores],
        "token_logprobs": [s.logprob for s in scores],
        "top_logprobs": [s.top for s in scores],
        "text_offset": offsets,
    }


# -- /v1/completions --------------------------------------------------------------------------


async def completions(request: Request) -> Response:
    service: Service = request.app.state.service
    limits = service.limits
    fields = Fields(await read_json(request, limits), COMPLETION_FIELDS)
    common = _Common(service, fields, UNSUPPORTED)
    prompt = fields.raw("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest(
            "prompt must be a string or a non-empty list of strings (token ids are not supported)", "prompt"
        )
    if len(prompts) * common.n > limits.max_streams:
        raise BadRequest(
            f"{len(prompts)} prompts x n={common.n} exceed the {limits.max_streams} streams", "prompt"
        )
    best_of = fields.integer("best_of", None, 1)
    if best_of is not None and best_of != common.n:
        raise BadRequest(f"best_of other than n ({common.n}) is not supported by seqpred", "best_of")
    max_tokens = fields.integer("max_tokens", COMPLETION_MAX_TOKENS, 0, limits.max_length)
    echo = fields.boolean("echo", False)
    logprobs = fields.integer("logprobs", None, 0, MAX_LOGPROBS)
    specs = []
    for i, text in enumerate(prompts):
        param = "prompt" if isinstance(prompt, str) else f"prompt[{i}]"
        if echo and logprobs is not None:
            specs.append(dict(ids=common.job(text, 0, param)["ids"], score=True, logprobs=logprobs))
        specs.append(common.job(text, max_tokens, param, logprobs=logprobs))
    pending = service.submit(specs)
    reply = _CompletionReply(common, prompts, echo, logprobs is not None)
    if common.stream:
        return event_stream(reply.chunks(pending), pending)
    done = await pending.finish(request)
    if done is None:
        return Response(status_code=499)
    return JSONResponse(reply.whole(done))


class _CompletionReply:
    """Engine results in OpenAI's text-completion formats (the whole answer, or chunks)."""

    def __init__(self, common: _Common, prompts: list[str], echo: bool, logprobs: bool):
        self.common = common
        self.prompts = prompts
        self.echo = echo
        self.logprobs = logprobs
        self.scored = echo and logprobs  # a scoring job precedes each prompt's generation job
        per_prompt = 2 if self.scored else 1
        self.prompt_of = lambda job: job // per_prompt
        self.is_score = lambda job: self.scored and job % 2 == 0
        self._prefix: str | None = None

    def _head(self) -> dict[str, Any]:
        c = self.common
        return {
            "id": f"cmpl-{c.id}",
            "object": "text_completion",
            "created": c.created,
            "model": c.service.model_name,
        }

    def whole(self, done: list[Done]) -> dict[str, Any]:
        choices, samples = [], []
        n = self.common.n
        for p, prompt in enumerate(self.prompts):
            scored = done[2 * p].samples[0].scores if self.scored else None
            generated = done[2 * p + 1 if self.scored else p].samples
            samples += generated
            for j, sample in enumerate(generated):
                text = (prompt if self.echo else "") + sample.text
                lp = None
                if self.logprobs:
                    scores = (scored or []) + (sample.scores or [])
                    lp = _logprobs(scores, 0)
                    if self.echo:  # the prompt's own offsets, then the completion's after the prompt
                        lp["text_offset"] = (
                            _logprobs(scored or [], 0)["text_offset"]
                            + _logprobs(sample.scores or [], len(prompt))["text_offset"]
                        )
                choices.append(
                    {"text": text, "index": p * n + j, "logprobs": lp, "finish_reason": sample.finish_reason}
                )
        prompt_tokens = sum(self.common.prompt_tokens(p) for p in self.prompts)
        return {**self._head(), "choices": choices, "usage": self.common.usage(prompt_tokens, samples)}

    def _chunk(self, index: int, text: str, logprobs=None, finish_reason=None) -> str:
        choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}
        if self._prefix is None:  # the fields every chunk repeats, serialised once
            self._prefix = "data: " + json.dumps(self._head(), ensure_ascii=False)[:-1] + ', "choices": ['
        return self._prefix + json.dumps(choice, ensure_ascii=False) + "]}\n\n"

    async def chunks(self, pending: Pending) -> AsyncIterator[str]:
        n = self.common.n
        offsets = [0] * (len(self.prompts) * n)
        samples: list[Sample] = []
        if self.echo and not self.logprobs:
            for p, prompt in enumerate(self.prompts):
                for j in range(n):
                    offsets[p * n + j] = len(prompt)
                    yield self._chunk(p * n + j, prompt)
        async for events in pending.events(paced=True):
            texts: dict[int, str] = {}
            scores: dict[int, list[TokenScore]] = {}
            finished: list[tuple[int, str]] = []
            for job, event in events:
                p = self.prompt_of(job)
                if isinstance(event, Delta):
                    index = p * n + event.index
                    texts[index] = texts.get(index, "") + event.text
                    scores.setdefault(index, []).extend(event.scores)
                elif self.is_score(job):  # the prompt, echoed with its own scores
                    prompt_scores = event.samples[0].scores or []
                    for j in range(n):
                        yield self._chunk(p * n + j, self.prompts[p], _logprobs(prompt_scores, 0))
                        offsets[p * n + j] = len(self.prompts[p])
                else:
                    samples += event.samples
                    finished += [(p * n + j, s.finish_reason) for j, s in enumerate(event.samples)]
            for index, text in texts.items():
                lp = _logprobs(scores[index], offsets[index]) if self.logprobs else None
                offsets[index] += len(text)
                yield self._chunk(index, text, lp)
            for index, reason in finished:
                yield self._chunk(index, "", None, reason)
        if self.common.include_usage:
            prompt_tokens = sum(self.common.prompt_tokens(p) for p in self.prompts)
            yield sse({**self._head(), "choices": [], "usage": self.common.usage(prompt_tokens, samples)})
        yield sse("[DONE]")


# -- /v1/chat/completions ---------------------------------------------------------------------


def chat_prime(messages: Any, max_chars: int) -> str:
    """The prime of a chat: every message's text, in order, each followed by a line break."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of messages", "messages")
    lines = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: only text can be read
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                for p in content
            ):
                raise BadRequest(
                    f"messages[{i}].content: only text parts are supported", f"messages[{i}].content"
                )
            content = "".join(p["text"] for p in content)
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(content, str)
        ):
            raise BadRequest(
                f"messages[{i}] must be an object with a role and a text content", f"messages[{i}]"
            )
        lines.append(content + "\n")
    prime = "".join(lines)
    if len(prime) > max_chars:
        raise BadRequest(
            f"the messages hold {len(prime):,} characters, over the limit of {max_chars:,}", "messages"
        )
    return prime


async def chat_completions(request: Request) -> Response:
    service: Service = request.app.state.service
    limits = service.limits
    fields = Fields(await read_json(request, limits), CHAT_FIELDS)
    common = _Common(service, fields, CHAT_UNSUPPORTED)
    prime = chat_prime(fields.raw("messages"), limits.max_prime)
    length = fields.integer("max_completion_tokens", None, 0, limits.max_length)
    length = fields.integer("max_tokens", CHAT_MAX_TOKENS if length is None else length, 0, limits.max_length)
    pending = service.submit([common.job(prime, length, "messages")])
    head = {"id": f"chatcmpl-{common.id}", "created": common.created, "model": service.model_name}
    if common.stream:
        return event_stream(_chat_chunks(common, prime, head, pending), pending)
    done = await pending.finish(request)
    if done is None:
        return Response(status_code=499)
    samples = done[0].samples
    choices = [
        {
            "index": j,
            "message": {"role": "assistant", "content": s.text},
            "logprobs": None,
            "finish_reason": s.finish_reason,
        }
        for j, s in enumerate(samples)
    ]
    usage = common.usage(common.prompt_tokens(prime), samples)
    return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": usage})


async def _chat_chunks(common: _Common, prime: str, head: dict, pending: Pending) -> AsyncIterator[str]:
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(index: int, delta: dict, finish_reason=None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse({**head, "choices": [choice]})

    for j in range(common.n):
        yield chunk(j, {"role": "assistant", "content": ""})
    samples: list[Sample] = []
    async for events in pending.events(paced=True):
        texts: dict[int, str] = {}
        for _, event in events:
            if isinstance(event, Delta):
                texts[event.index] = texts.get(event.index, "") + event.text
            else:
                for index, text in texts.items():
                    if text:
                        yield chunk(index, {"content": text})
                texts = {}
                samples += event.samples
                for j, sample in enumerate(event.samples):
                    yield chunk(j, {}, sample.finish_reason)
        for index, text in texts.items():
            if text:
                yield chunk(index, {"content": text})
    if common.include_usage:
        yield sse({**head, "choices": [], "usage": common.usage(common.prompt_tokens(prime), samples)})
    yield sse("[DONE]")
