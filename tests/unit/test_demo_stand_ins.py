"""The demo's stand-ins (hybrid_router_cli/demo/config.py): how many threads each decodes on."""

from __future__ import annotations

import pytest

from hybrid_router_cli.demo import config as dc


@pytest.mark.parametrize("ray", [False, True])
def test_on_a_small_machine_every_stand_in_decodes_on_one_thread(ray: bool) -> None:
    for cpus in (1, 2, 3):
        chosen = dc.stand_ins(ray, cpus=cpus)
        assert [s.threads for s in chosen] == [1, 1, 1], cpus
        # Only the thread count changes: the same stand-ins, in the same order.
        assert [s.name for s in chosen] == [s.name for s in dc.stand_ins(ray, cpus=8)]


@pytest.mark.parametrize("ray", [False, True])
def test_with_four_cpus_or_more_the_gpu_and_hosted_stand_ins_take_two(ray: bool) -> None:
    for cpus in (4, 16):
        chosen = {s.name: s.threads for s in dc.stand_ins(ray, cpus=cpus)}
        assert chosen == {"edge-site-a": 1, "gpu-pool": 2, "hosted-api": 2}


def test_the_threads_reach_each_server_command_line() -> None:
    edge, gpu, hosted = dc.stand_ins(False, cpus=2)
    argv = dc.model_server_argv(gpu, "/m.gguf")
    assert argv[argv.index("--n-threads") + 1] == "1"
    argv = dc.openai_server_argv(hosted, "/m.gguf", 8000)
    assert argv[argv.index("--n_threads") + 1] == "1"
    (gpu_ray,) = [s for s in dc.stand_ins(True, cpus=2) if s.server == "ray_serve"]
    argv = dc.ray_serve_argv(gpu_ray, "/m.gguf")
    assert '"n_threads": 1' in " ".join(argv)


def test_available_cpus_is_at_least_one() -> None:
    assert dc.available_cpus() >= 1
