"""policy.output_estimate through a real router: dispatch learns how much of
max_output_tokens the tenant's answers use, and later decisions estimate latency with it
(router/output_lengths.py); cost estimates keep max_output_tokens."""

from __future__ import annotations

import pytest
from rtutil import collect, ms_backend, stub_for, user_request

from serving.engines.scripted import ScriptedEngine


@pytest.mark.parametrize("enabled", [True, False])
async def test_learnt_answer_lengths_shorten_the_latency_estimate(
    enabled, model_server, start_router, channel_to
):
    engine = ScriptedEngine(reply_tokens=5)
    router = await start_router(
        [ms_backend("gpu-a", "gpu", await model_server(engine))],
        policy={
            # priors stay (min_samples): only the output length can change the estimate
            "min_samples": 100,
            "output_estimate": {"enabled": enabled, "min_samples": 3, "quantile": 0.9},
        },
    )
    stub = stub_for(channel_to(router))
    before = (await stub.Route(user_request(max_output_tokens=100))).estimate
    for _ in range(3):
        await collect(stub.Generate(user_request(max_output_tokens=100)))
    after = (await stub.Route(user_request(max_output_tokens=100))).estimate

    # priors: 50 ms TTFT, 100 tokens/s. 100 tokens -> 1,000 ms of decode; 5 -> 50 ms.
    assert before.total_ms - before.ttft_ms == pytest.approx(1000.0, rel=0.3)
    decode_after = after.total_ms - after.ttft_ms
    if enabled:
        assert decode_after == pytest.approx(50.0, rel=0.3)  # 5 of 100 tokens expected
    else:
        assert decode_after == before.total_ms - before.ttft_ms
    assert after.cost_usd == before.cost_usd  # cost: still max_output_tokens
