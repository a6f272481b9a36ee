"""The official openai client against `moonforge serve` (tests/e2e/test_serve.sh).

    serve_openai.py URL

Chat, completion, streaming and embeddings through openai.OpenAI, and an
unknown model raising its NotFoundError. Prints a skip note and exits 0
when the openai package is not installed.
"""
import sys

try:
    import openai
except ImportError:
    print("skipped: the openai package is not installed")
    sys.exit(0)


def main():
    client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "What is the capital of France?"}]

    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    reply = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    pieces = []
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == reply, ("".join(pieces), reply)

    text = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert text.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True))
    assert streamed == text.choices[0].text

    emb = client.embeddings.create(model=model, input=["hello", "world"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404
    try:
        client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "x"}])
        raise AssertionError("an unknown role was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400
    print("openai client: chat, stream, completion, embeddings and errors ok")


if __name__ == "__main__":
    main()
