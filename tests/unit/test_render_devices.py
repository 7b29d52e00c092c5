"""``hybrid-router devices``: the fleet table, one row per device."""

from __future__ import annotations

from hybrid_router.v1 import edge_link_pb2 as epb
from testkit import rendered

from hybrid_router_cli import render


def test_each_device_shows_its_decode_and_prompt_reading_rates() -> None:
    resp = epb.ListDevicesResponse(
        router_id="r-1",
        devices=[
            epb.DeviceStatus(
                device_id="dev-north",
                online=True,
                site="north",
                decode_tokens_per_s=18.4,
                prefill_tokens_per_s=1234.0,
            ),
            epb.DeviceStatus(device_id="dev-south", online=True, site="south"),
        ],
    )
    out = rendered(render.devices_view(resp, address="127.0.0.1:50051"))
    assert "decode" in out and "prompt" in out  # the columns' headers
    north = next(line for line in out.splitlines() if "dev-north" in line)
    south = next(line for line in out.splitlines() if "dev-south" in line)
    assert "18.4" in north and "1,234" in north
    assert "1,234" not in south and south.count(" - ") >= 2  # neither rate reported
