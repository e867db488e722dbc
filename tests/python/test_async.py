"""AsyncOpenAI: several streams at once through one gateway."""

from __future__ import annotations

import asyncio
import time

from conftest import COMPLETION_TOKENS, SLOW_TOKENS_PER_SECOND

PROMPTS = [f"Concurrent question number {i}" for i in range(4)]


async def stream_one(client, prompt: str):
    """Streams one answer; returns its text, usage and the arrival times of its content chunks."""
    stream = await client.chat.completions.create(
        model="sim-slow",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, times, usage = [], [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
            times.append(time.monotonic())
    return "".join(parts), usage, times


async def run_concurrently(gateway):
    async with gateway.async_client() as client:
        return await asyncio.gather(*(stream_one(client, p) for p in PROMPTS))


def test_concurrent_async_streams(gateway, client):
    expected = [
        client.chat.completions.create(model="sim-slow", messages=[{"role": "user", "content": p}])
        for p in PROMPTS
    ]
    results = asyncio.run(run_concurrently(gateway))

    assert len(results) == len(PROMPTS)
    for (text, usage, times), plain in zip(results, expected):
        # Each stream gets its own answer, whole and in order, not another stream's.
        assert text == plain.choices[0].message.content
        assert usage is not None
        assert usage.completion_tokens == COMPLETION_TOKENS
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert len(times) == COMPLETION_TOKENS
    assert len({text for text, _, _ in results}) > 1, "different prompts, different answers"

    # Served at once, not one after the other: every stream had started
    # before any had finished (each takes about
    # (COMPLETION_TOKENS - 1) / SLOW_TOKENS_PER_SECOND seconds).
    last_start = max(times[0] for _, _, times in results)
    first_end = min(times[-1] for _, _, times in results)
    assert last_start < first_end, (last_start, first_end)
    one_stream = (COMPLETION_TOKENS - 1) / SLOW_TOKENS_PER_SECOND
    assert first_end - last_start > 0.3 * one_stream
