"""The OpenAI-compatible routes, through the official ``openai`` client and the ``llm`` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.serve_helpers import LiveServer, served_run, sse_events  # noqa: F401

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from seqpred.generate import Generator  # noqa: E402
from seqpred.scoring import carried_loss  # noqa: E402
from seqpred.serve.limits import Limits  # noqa: E402
from tests.conftest import Cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"


@pytest.fixture(scope="module")
def server(served_run):  # noqa: F811
    live = LiveServer(served_run, Limits(max_streams=32), api_key=KEY)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def cli_samples(run, prime: str, length: int, *args) -> list[str]:
    result = Cli()("generate", run, "--json", "--prime", prime, "--length", length, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["samples"]


def test_models_lists_the_run_under_its_name(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["demo"]  # the run folder's name
    assert models.data[0].object == "model" and models.data[0].owned_by == "seqpred"
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_completion_gives_the_text_of_seqpred_generate_and_of_generate_route(client, server, served_run):  # noqa: F811
    want = cli_samples(served_run, "The king", 60, "--seed", 7, "--temperature", 0.9, "--top-p", 0.95)
    completion = client.completions.create(
        model="demo", prompt="The king", max_tokens=60, seed=7, temperature=0.9, top_p=0.95
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.model == "demo" and abs(completion.created - __import__("time").time()) < 60
    choice = completion.choices[0]
    assert choice.text == want[0] and choice.finish_reason == "length" and choice.index == 0
    assert completion.usage.prompt_tokens == 8 and completion.usage.completion_tokens == 60
    assert completion.usage.total_tokens == 68
    own = httpx.post(
        server.url + "/generate",
        json={"prime": "The king", "length": 60, "seed": 7, "temperature": 0.9, "top_p": 0.95},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert own["text"] == want[0]


def test_temperature_zero_is_greedy_and_top_k_is_an_extra_field(client, served_run):  # noqa: F811
    greedy = client.completions.create(model="demo", prompt="And", max_tokens=40, temperature=0)
    assert greedy.choices[0].text == cli_samples(served_run, "And", 40, "--greedy")[0]
    top_k = client.completions.create(
        model="demo", prompt="And", max_tokens=40, seed=3, extra_body={"top_k": 4}
    )
    assert (
        top_k.choices[0].text
        == cli_samples(served_run, "And", 40, "--seed", 3, "--top-k", 4, "--temperature", 1)[0]
    )


def test_n_samples_and_stop_strings(client, served_run):  # noqa: F811
    completion = client.completions.create(
        model="demo", prompt="The", max_tokens=200, n=3, seed=2, stop=["e", "!"]
    )
    want = cli_samples(
        served_run,
        "The",
        200,
        "--seed",
        2,
        "--num-samples",
        3,
        "--stop",
        "e",
        "--stop",
        "!",
        "--temperature",
        1,
    )
    assert [c.text for c in completion.choices] == want
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.finish_reason == "stop" for c in completion.choices)
    assert completion.usage.completion_tokens == sum(len(t) + 1 for t in want)  # the stop token counts


def test_a_list_of_prompts_is_one_batch_with_choices_in_prompt_order(client, served_run):  # noqa: F811
    completion = client.completions.create(
        model="demo", prompt=["The", "And the"], max_tokens=30, n=2, seed=5
    )
    texts = [c.text for c in completion.choices]
    assert texts == cli_samples(
        served_run, "The", 30, "--seed", 5, "--num-samples", 2, "--temperature", 1
    ) + cli_samples(served_run, "And the", 30, "--seed", 5, "--num-samples", 2, "--temperature", 1)
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]


def test_streaming_chunks_add_up_to_the_same_text_and_end(client, server):
    whole = client.completions.create(model="demo", prompt="The", max_tokens=300, n=2, seed=4)
    chunks = list(
        client.completions.create(
            model="demo",
            prompt="The",
            max_tokens=300,
            n=2,
            seed=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for index in (0, 1):
        text = "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == index)
        assert text == whole.choices[index].text
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].index == index]
        assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])
    assert chunks[-1].usage.completion_tokens == 600 and chunks[0].object == "text_completion"
    raw = httpx.post(
        server.url + "/v1/completions",
        json={"prompt": "The", "max_tokens": 5, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert sse_events(raw.text.splitlines())[-1] == "[DONE]"


def test_logprobs_give_each_tokens_score_and_the_k_most_likely(client, served_run):  # noqa: F811
    completion = client.completions.create(model="demo", prompt="The", max_tokens=20, seed=1, logprobs=3)
    choice = completion.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == 20
    assert lp.text_offset == list(range(20))
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3 and logprob <= 0
        assert logprob <= max(top.values()) + 1e-12
        assert token not in top or abs(top[token] - logprob) < 1e-9
    # the scores are the model's own: the first equals the prime's next-token distribution
    generator = Generator(served_run, "torch")
    ids = generator.vocab.encode("The")
    logits, _ = generator.model.forward(ids[None, :], generator.model.initial_state(1))
    z = np.asarray(logits[0, -1], dtype=np.float64)
    logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
    assert abs(lp.token_logprobs[0] - logp[generator.vocab.index[lp.tokens[0]]]) < 1e-5


def test_echo_with_zero_tokens_scores_the_prompt_as_seqpred_evaluate_does(client, served_run):  # noqa: F811
    text = "The king and the queen rode out at dawn.\nThe sea sang of rain.\n"
    completion = client.completions.create(model="demo", prompt=text, max_tokens=0, echo=True, logprobs=2)
    choice = completion.choices[0]
    assert choice.text == text
    lp = choice.logprobs
    assert "".join(lp.tokens) == text and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == list(range(len(text)))
    generator = Generator(served_run, "torch")
    loss = -np.mean(lp.token_logprobs[1:])
    assert abs(loss - carried_loss(generator.model, generator.vocab.encode(text))) < 1e-9
    assert completion.usage.prompt_tokens == len(text) and completion.usage.completion_tokens == 0
    # echo with generation: the prompt, then the completion, scored throughout
    both = client.completions.create(model="demo", prompt="The", max_tokens=5, echo=True, logprobs=1, seed=0)
    assert both.choices[0].text.startswith("The") and len(both.choices[0].logprobs.tokens) == 8
    assert both.choices[0].logprobs.text_offset == list(range(8))


def test_chat_maps_messages_to_a_prime_and_back(client, served_run):  # noqa: F811
    messages = [{"role": "system", "content": "The king"}, {"role": "user", "content": "and the queen"}]
    want = cli_samples(served_run, "The king\nand the queen\n", 50, "--seed", 3, "--temperature", 0.7)[0]
    chat = client.chat.completions.create(
        model="demo", messages=messages, max_tokens=50, seed=3, temperature=0.7
    )
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content == want
    assert chat.usage.prompt_tokens == len("The king\nand the queen\n")
    chunks = list(
        client.chat.completions.create(
            model="demo", messages=messages, max_tokens=50, seed=3, temperature=0.7, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[0].object == "chat.completion.chunk"
    parts = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": [{"type": "text", "text": "The"}]}], max_tokens=3
    )
    assert len(parts.choices[0].message.content) == 3


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"logit_bias": {"50": 10}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
        ({"temperature": 2.5}, "temperature"),
        ({"logprobs": 6}, "logprobs"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"extra_body": {"no_such": 1}}, "no_such"),
    ],
)
def test_unsupported_or_bad_parameters_raise_bad_request_naming_them(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="demo", prompt="The", **{"max_tokens": 5, **kwargs})
    error = caught.value.body
    assert error["param"] == param and param in error["message"] and error["type"] == "invalid_request_error"


def test_chat_refuses_tools_and_unknown_symbols(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "The"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert caught.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Zebra"}])
    assert caught.value.body["param"] == "messages" and "'Z'" in caught.value.body["message"]


def test_a_wrong_or_missing_key_raises_authentication_error(server):
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "x", max_retries=0)
        if not key:
            bad = openai.OpenAI(
                base_url=server.url + "/v1", api_key="x", max_retries=0, default_headers={"Authorization": ""}
            )
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="demo", prompt="The", max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0).completions.create(
            model="gpt-4", prompt="The", max_tokens=3
        )


def test_same_text_through_every_door_among_concurrent_requests(client, server, served_run):  # noqa: F811
    cases = [(f"The {word}", seed) for word, seed in (("king", 1), ("sea", 2), ("queen", 3), ("wind", 4))]
    wants = [
        cli_samples(served_run, prime, 150, "--seed", seed, "--temperature", 1)[0] for prime, seed in cases
    ]

    def through_openai(case):
        prime, seed = case
        return (
            client.completions.create(model="demo", prompt=prime, max_tokens=150, seed=seed).choices[0].text
        )

    def through_generate(case):
        prime, seed = case
        body = {"prime": prime, "length": 150, "seed": seed, "temperature": 1}
        headers = {"Authorization": f"Bearer {KEY}"}
        return httpx.post(server.url + "/generate", json=body, headers=headers, timeout=30).json()["text"]

    with ThreadPoolExecutor(16) as pool:
        futures = [
            pool.submit(f, c) for _ in range(2) for f in (through_openai, through_generate) for c in cases
        ]
        answers = [f.result() for f in futures]
    assert answers == (wants + wants) * 2


def test_the_llm_command_prints_a_completion(tmp_path, served_run):  # noqa: F811
    live = LiveServer(served_run, model_name="tiny")
    try:
        config = tmp_path / "llm"
        config.mkdir()
        (config / "extra-openai-models.yaml").write_text(
            f"- model_id: seqpred-tiny\n  model_name: tiny\n  api_base: {live.url}/v1\n  completion: true\n"
        )
        env = {**os.environ, "LLM_USER_PATH": str(config)}
        llm = [sys.executable, "-m", "llm"]
        args = ["-m", "seqpred-tiny", "-o", "max_tokens", "40", "-o", "temperature", "0", "--no-log"]
        want = cli_samples(served_run, "The king", 40, "--greedy")[0]
        for extra in ([], ["--no-stream"]):
            result = subprocess.run(
                [*llm, *args, *extra, "The king"], capture_output=True, text=True, env=env, timeout=120
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == want + "\n"
    finally:
        live.stop()


def readme_curl_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```console\n(.*?)```", readme, re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ curl "):
                command = line[2:]
                while command.endswith("\\"):  # continued on the next line
                    i += 1
                    command = command[:-1] + lines[i]
                commands.append(command)
    return commands


def test_the_readmes_curl_examples_run_as_printed(served_run):  # noqa: F811
    commands = readme_curl_commands()
    assert len(commands) >= 4, commands
    live = LiveServer(served_run, Limits(max_length=500))
    try:
        port = live.url.rsplit(":", 1)[1]
        for command in commands:
            assert "localhost:8000" in command, command
            run = command.replace("localhost:8000", f"localhost:{port}")
            result = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (command, result.stderr)
            out = result.stdout.strip()
            if out.startswith("data: "):
                events = sse_events(out.splitlines())
                assert events and "error" not in json.dumps(events[-1]), (command, out)
            else:
                assert "error" not in json.loads(out), (command, out)
    finally:
        live.stop()
