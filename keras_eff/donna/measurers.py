"""Measurers: what an architecture costs on a target, measured, not modelled.

Every measurer takes the same thing, the candidate's full-int8 TFLite file (``tflite_export.to_tflite``), and returns
a dict of metrics:

- :class:`LiteRTLatency`: the LiteRT interpreter on this machine, ``latency_us`` (median of ``runs`` batch-1
  inferences after ``warmup``, ``num_threads`` threads, XNNPACK) and ``flash_bytes``;
- :class:`MicroBudget`: a microcontroller budget, not a latency (the host TFLite Micro runs reference kernels):
  ``flash_bytes`` (the int8 file), ``ram_bytes`` (the smallest tensor arena the TFLite Micro interpreter needs on
  this host, an estimate: a device build differs), ``micro_unsupported_ops`` (how many of the model's ops TFLite
  Micro lacks) and the op list;
- :class:`EthosUMeasurer`: an Arm Ethos-U microNPU, as Arm's Vela compiler reports it (no hardware needed):
  ``latency_us`` (Vela's inference time), ``npu_cycles``, ``flash_bytes`` (flash for the command stream and the
  compressed weights), ``ram_bytes`` (SRAM), ``npu_cpu_ops`` (ops Vela leaves to the CPU);
- :class:`RayRemoteMeasurer`: any of these run by Ray actors (one, or a pool of ``actors``), placed on the node (or
  custom resource) where the model will run; the files travel to them, the metrics come back; with a pool, the
  candidates of a generation are measured concurrently, one per actor.

Measurers are plain configs (``get_config``/``measurer_from_config``) so that a scenario file names them.
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from abc import ABC, abstractmethod
from typing import Any

import keras
import numpy as np

from tflite_export import (
    TFLiteModel,
    accelerators,
    compile_ethos_u,
    find_arena_size,
    read_graph,
    to_tflite,
    unsupported_micro_ops,
    vela_version,
)

from . import measure_cache
from .checks import as_int
from .reference import build_model
from .space import Architecture, SearchSpace

KNOWN_METRICS = ("latency_us", "flash_bytes", "ram_bytes", "micro_unsupported_ops", "npu_cycles", "npu_cpu_ops")


class Measurer(ABC):
    """What an architecture costs on a target, measured: the base class of the measurers.

    A measurer takes the candidate's full-int8 TFLite file and returns a dict of metrics. Subclasses set ``kind``
    (their config name) and ``metrics`` (the metrics they give) and implement :meth:`measure`; one that reads the
    architecture itself instead (an analytical cost, a test double) sets ``needs_model = False`` and implements
    :meth:`measure_architecture`. To be named in a config, a measurer needs an entry in ``MEASURERS``.

    Example:
        ```python
        class FlashOnly(Measurer):
            kind = "flash"
            metrics = ("flash_bytes",)

            def measure(self, model_bytes):
                return {"flash_bytes": len(model_bytes)}

        Scenario("flash", measurers=[FlashOnly()], objective="flash_bytes")
        ```
    """

    kind = "abstract"
    metrics: tuple = ()
    needs_model = True  # False: the measurer reads the architecture itself (measure_architecture), no int8 file

    @abstractmethod
    def measure(self, model_bytes: bytes) -> dict:
        """The metrics of one model.

        Args:
            model_bytes: A full-int8 TFLite file, batch 1 and static shapes.

        Returns:
            ``{metric: value}``: numbers for the metrics of ``metrics``; lists and strings allowed for
            information.
        """

    def measure_architecture(self, space, arch) -> dict:
        """The metrics of ``arch``, for measurers with ``needs_model = False`` (an analytical cost, a test double).

        Args:
            space: The `SearchSpace` as measured (the scenario's input size).
            arch: The `Architecture`.

        Returns:
            ``{metric: value}``, as :meth:`measure`.

        Raises:
            TypeError: In this base class: measurers of int8 files do not define it.
        """
        raise TypeError(
            f"{type(self).__name__} measures int8 files (needs_model = True): call measure(model_bytes); "
            f"a measurer that sets needs_model = False must define measure_architecture(space, arch)"
        )

    def get_config(self) -> dict:
        """The measurer as a plain mapping, which :func:`measurer_from_config` reads back.

        Returns:
            ``{"kind": ..., **settings}``.
        """
        return {"kind": self.kind}

    def cache_key(self) -> dict:
        """What the result depends on: cached results are shared only between measurers with the same key.

        Returns:
            A JSON-serializable dict; by default :meth:`get_config`.
        """
        return self.get_config()

    def describe(self) -> str:
        """A short description for logs.

        Returns:
            E.g. ``"litert(num_threads=1, runs=100, ...)"``.
        """
        cfg = {k: v for k, v in self.get_config().items() if k != "kind"}
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in cfg.items())})"


class LiteRTLatency(Measurer):
    """Batch-1 latency with the LiteRT interpreter on this machine, and the file's size.

    Metrics: ``latency_us``, the median over ``rounds`` rounds of the median of ``runs`` inferences (after
    ``warmup`` runs in the first round, 2 in later ones), and ``flash_bytes``, the int8 file's size. The cache key
    holds the host name, the machine type and the ``ai-edge-litert`` version: latencies measured elsewhere are
    never reused.

    Args:
        num_threads: Interpreter threads, >= 1.
        runs: Timed inferences per round, >= 1.
        warmup: Untimed inferences before the first round, >= 0.
        use_xnnpack: Whether to use the XNNPACK delegate.
        rounds: Rounds, >= 1; one round can land on a moment when the machine is busy.

    Raises:
        ValueError: If a count is not an integer in its range.

    Example:
        ```python
        latency = LiteRTLatency(num_threads=2)
        latency.measure(int8_model(space, arch))   # {"latency_us": ..., "flash_bytes": ...}
        ```
    """

    kind = "litert"
    metrics = ("latency_us", "flash_bytes")

    def __init__(
        self, num_threads: int = 1, runs: int = 100, warmup: int = 20, use_xnnpack: bool = True, rounds: int = 3
    ):
        for name, v, lo in (
            ("num_threads", num_threads, 1),
            ("runs", runs, 1),
            ("warmup", warmup, 0),
            ("rounds", rounds, 1),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"LiteRTLatency.{name}: {v!r} must be an integer >= {lo}")
        self.num_threads, self.runs, self.warmup = num_threads, runs, warmup
        self.use_xnnpack, self.rounds = bool(use_xnnpack), rounds

    def measure(self, model_bytes: bytes) -> dict:
        """Times the model with the LiteRT interpreter here.

        Args:
            model_bytes: A full-int8 TFLite file.

        Returns:
            ``{"latency_us": float, "flash_bytes": int}``.
        """
        model = TFLiteModel(model_bytes, num_threads=self.num_threads, use_xnnpack=self.use_xnnpack)
        # the median of several rounds' medians: one round can land on a moment when the machine is busy
        medians = [
            model.latency(runs=self.runs, warmup=self.warmup if r == 0 else 2, seed=r).median_us
            for r in range(self.rounds)
        ]
        medians.sort()
        return {"latency_us": float(medians[len(medians) // 2]), "flash_bytes": len(model_bytes)}

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "num_threads": self.num_threads,
            "runs": self.runs,
            "warmup": self.warmup,
            "use_xnnpack": self.use_xnnpack,
            "rounds": self.rounds,
        }

    def cache_key(self) -> dict:
        # latency belongs to the machine it was measured on, and to the runtime that ran it
        return {
            **self.get_config(),
            "host": platform.node(),
            "machine": platform.machine(),
            "litert": measure_cache.package_version("ai-edge-litert"),
        }


class MicroBudget(Measurer):
    """Flash and RAM on a microcontroller, and whether TFLite Micro has every op: constraints, not latency.

    Metrics: ``flash_bytes`` (the int8 file), ``ram_bytes`` (the tensor arena the TFLite Micro interpreter needs on
    this host, with ``margin`` added: an estimate, a device build differs; infinite when an op is missing),
    ``micro_unsupported_ops`` (how many of the model's ops TFLite Micro lacks), and for information ``micro_ops``
    and ``micro_missing``. A scenario with this measurer requires every op to be one TFLite Micro has. The cache
    key holds the ``tflite-micro`` version.

    Args:
        margin: Fraction added to the smallest arena found (0.25 = 25 %), between 0 and 10.

    Raises:
        ValueError: If ``margin`` is outside [0, 10].

    Example:
        ```python
        Scenario("mcu", [{"kind": "litert"}, {"kind": "micro", "margin": 0.1}],
                 limits={"flash_bytes": 256 * 1024, "ram_bytes": 64 * 1024})
        ```
    """

    kind = "micro"
    metrics = ("flash_bytes", "ram_bytes", "micro_unsupported_ops")

    def __init__(self, margin: float = 0.0):
        if not 0 <= margin <= 10:
            raise ValueError(f"MicroBudget.margin: {margin} must be a fraction between 0 and 10 (0.25 = 25%)")
        self.margin = float(margin)

    def measure(self, model_bytes: bytes) -> dict:
        """Reads the model's ops and finds its tensor arena with the host TFLite Micro interpreter.

        Args:
            model_bytes: A full-int8 TFLite file.

        Returns:
            ``flash_bytes``, ``ram_bytes`` (``inf`` when an op is missing), ``micro_unsupported_ops``,
            ``micro_ops``, ``micro_missing`` and, when the arena was found, ``ram_host_min_bytes`` and
            ``ram_note``.
        """
        ops = sorted(set(read_graph(model_bytes).op_names()))
        missing = unsupported_micro_ops(model_bytes)
        out = {
            "flash_bytes": len(model_bytes),
            "micro_unsupported_ops": len(missing),
            "micro_ops": ops,
            "micro_missing": missing,
        }
        if missing:  # the arena cannot be found for a model TFLite Micro cannot run
            out["ram_bytes"] = float("inf")
            return out
        arena = find_arena_size(model_bytes, margin=self.margin)
        out.update(
            ram_bytes=arena.recommended_bytes,
            ram_host_min_bytes=arena.host_min_bytes,
            ram_note="estimate from the host TFLite Micro interpreter; a device build differs",
        )
        return out

    def get_config(self) -> dict:
        return {"kind": self.kind, "margin": self.margin}

    def cache_key(self) -> dict:
        return {**self.get_config(), "tflite_micro": measure_cache.package_version("tflite-micro")}


class EthosUMeasurer(Measurer):
    """An Arm Ethos-U NPU as Arm's Vela compiler compiles for it (no hardware needed).

    Metrics: ``latency_us`` (Vela's inference time), ``npu_cycles``, ``flash_bytes`` (command stream and compressed
    weights), ``ram_bytes`` (SRAM) and ``npu_cpu_ops`` (ops left to the CPU; a scenario requires 0 unless its
    limits say otherwise), plus ``dram_bytes`` and other details for information. Every figure is Vela's own
    performance estimate for the configuration, so results do not depend on this host; the cache key holds Vela's
    version, as another version may schedule differently. Needs ``pip install ethos-u-vela``.

    Args:
        accelerator: A Vela accelerator configuration, e.g. ``"ethos-u55-128"`` (see
            ``tflite_export.accelerators()``).
        system_config: A system configuration of Vela's configuration file; None: Vela's default.
        memory_mode: A memory mode of Vela's configuration file; None: Vela's default.
        config_file: Vela's configuration file; None: the one that ships with Vela.

    Raises:
        ValueError: If ``accelerator`` is not one the installed Vela knows.
        tflite_export.EthosUError: If Vela is not installed.

    Example:
        ```python
        npu = Scenario("u55", [{"kind": "ethos_u", "accelerator": "ethos-u55-128"}])
        ```
    """

    kind = "ethos_u"
    metrics = ("latency_us", "npu_cycles", "flash_bytes", "ram_bytes", "npu_cpu_ops")

    def __init__(
        self,
        accelerator: str = "ethos-u55-128",
        system_config: str | None = None,
        memory_mode: str | None = None,
        config_file: str | None = None,
    ):
        valid = accelerators()
        if accelerator not in valid:
            raise ValueError(f"EthosUMeasurer.accelerator: {accelerator!r} is unknown; choose from {', '.join(valid)}")
        self.accelerator, self.system_config, self.memory_mode = accelerator, system_config, memory_mode
        self.config_file = None if config_file is None else str(config_file)

    def measure(self, model_bytes: bytes) -> dict:
        """Compiles the model with Vela and reads its performance report.

        Args:
            model_bytes: A full-int8 TFLite file.

        Returns:
            ``latency_us``, ``npu_cycles``, ``flash_bytes``, ``ram_bytes``, ``npu_cpu_ops``, ``dram_bytes``,
            ``vela_file_bytes``, ``npu_encoded_weight_bytes``, ``system_config`` and ``memory_mode``.

        Raises:
            tflite_export.EthosUError: If Vela refuses or fails to compile the file.
        """
        r = compile_ethos_u(
            model_bytes,
            self.accelerator,
            system_config=self.system_config,
            memory_mode=self.memory_mode,
            config_file=self.config_file,
        ).report
        return {
            "latency_us": r.inference_time_us,
            "npu_cycles": r.cycles,
            "flash_bytes": r.flash_bytes,
            "ram_bytes": r.sram_bytes,
            "npu_cpu_ops": len(r.cpu_ops),
            "dram_bytes": r.dram_bytes,
            "vela_file_bytes": r.vela_file_bytes,
            "npu_encoded_weight_bytes": r.encoded_weight_bytes,
            "system_config": r.system_config,
            "memory_mode": r.memory_mode,
        }

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "accelerator": self.accelerator,
            "system_config": self.system_config,
            "memory_mode": self.memory_mode,
            "config_file": self.config_file,
        }

    def cache_key(self) -> dict:
        return {**self.get_config(), "vela": vela_version()}


class _MeasureActor:
    """The Ray actor behind :class:`RayRemoteMeasurer`: holds the inner measurer where the model will run."""

    def __init__(self, inner_config: dict):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self.measurer = measurer_from_config(inner_config)

    def measure(self, model_bytes: bytes) -> dict:
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        return {
            **self.measurer.measure(model_bytes),
            "measured_on": platform.node(),
            "measured_by": ray.get_runtime_context().get_actor_id(),
        }


class RayRemoteMeasurer(Measurer):
    """Runs ``inner`` (a measurer or its config) in Ray actors on another node.

    ``address`` names the cluster (None: the Ray already initialized here, else a local one with ``num_cpus``);
    ``resources`` (e.g. ``{"rpi4": 1}``, a custom resource the target node advertises) or ``node_id`` pin the actors
    to the device; ``device`` names the target in the cache key, so that latencies of different devices never mix.
    ``actors`` (default 1) is the size of the pool: :meth:`measure_many` (what the search's
    :meth:`~keras_eff.donna.cost.CostEvaluator.evaluate_many` calls once per generation) keeps every actor busy with
    one candidate at a time, so N actors measure N candidates at once. Give N > 1 only where the actors land on
    separate devices (a custom resource of 1 unit per device, e.g. ``{"rpi4": 1}`` on each of N boards) or where the
    metric does not depend on the load (flash and RAM budgets, Vela): N latency runs on one host disturb each other.
    A call slower than ``timeout_s`` (from its dispatch to its actor) kills that actor (a fresh one takes its place)
    and fails that candidate. Needs Ray (``pip install 'keras-eff[ray]'``). A Ray address is trusted: the files go
    to it and pickled results come back.

    Args:
        inner: The measurer the actors run (a `Measurer` or its config); None: ``{"kind": "litert"}``.
        device: The target's name, part of the cache key.
        address: The Ray cluster, e.g. ``"ray://host:10001"``, when Ray is not initialized here yet; None: a local
            Ray.
        num_cpus: CPUs of a local Ray started here.
        resources: Custom Ray resources each actor reserves, e.g. ``{"rpi4": 1}``.
        node_id: The Ray node to pin the actors to.
        timeout_s: Deadline of one measurement, in seconds; positive.
        actors: Size of the actor pool, >= 1.

    Raises:
        ImportError: If Ray is not installed.
        ValueError: If ``inner`` is itself remote or invalid, ``timeout_s`` is not positive or ``actors`` is not an
            integer >= 1.

    Example:
        ```python
        remote = RayRemoteMeasurer({"kind": "litert", "num_threads": 4}, device="rpi4", address="ray://head:10001",
                                   resources={"rpi4": 1})
        Scenario("rpi4", measurers=[remote])
        ```
    """

    kind = "ray"
    parallel = False  # True when actors > 1: CostEvaluator.evaluate_many then calls measure_many

    def __init__(
        self,
        inner=None,
        device: str = "ray-local",
        address: str | None = None,
        num_cpus: int | None = None,
        resources: dict | None = None,
        node_id: str | None = None,
        timeout_s: float = 300.0,
        actors: int = 1,
    ):
        try:
            import ray  # noqa: F401, PLC0415 - Ray is optional: checked here to name the extra to install
        except ImportError:
            raise ImportError(
                "RayRemoteMeasurer needs Ray: pip install 'keras-eff[ray]' (or pip install ray)"
            ) from None
        inner = inner if inner is not None else {"kind": "litert"}
        self.inner = inner if isinstance(inner, Measurer) else measurer_from_config(inner)
        if isinstance(self.inner, RayRemoteMeasurer):
            raise ValueError("RayRemoteMeasurer: the inner measurer cannot itself be remote")
        if not timeout_s > 0:
            raise ValueError(f"RayRemoteMeasurer.timeout_s: {timeout_s} must be positive")

        actors = as_int("RayRemoteMeasurer.actors", actors, 1)  # the size of the actor pool
        self.metrics = self.inner.metrics
        self.device, self.address, self.num_cpus = str(device), address, num_cpus
        self.resources, self.node_id, self.timeout_s = dict(resources or {}), node_id, float(timeout_s)
        self.actors = actors
        self.parallel = actors > 1
        self._pool: list[Any] = [None] * actors  # Ray actor handles (None: not started)
        self._started_ray = False
        self.max_in_flight = 0  # the most calls this measurer had running at once (for reports and tests)

    def _ensure_ray(self):
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        if not ray.is_initialized():
            kwargs = (
                {"address": self.address} if self.address else {"num_cpus": self.num_cpus, "include_dashboard": False}
            )
            ray.init(
                **kwargs,
                runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}},
                log_to_driver=False,
                ignore_reinit_error=True,
            )
            self._started_ray = True

    def _actor(self, slot: int):
        """The actor of pool slot ``slot``, started when there is none (first use, or after it died or hung)."""
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        self._ensure_ray()
        if self._pool[slot] is None:
            options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0}
            if self.resources:
                options["resources"] = self.resources
            if self.node_id:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415 - optional Ray

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
            self._pool[slot] = ray.remote(_MeasureActor).options(**options).remote(self.inner.get_config())
        return self._pool[slot]

    def measure(self, model_bytes: bytes) -> dict:
        """Measures one file on an actor of the pool.

        Args:
            model_bytes: A full-int8 TFLite file.

        Returns:
            The inner measurer's metrics, with ``measured_on`` (the host), ``measured_by`` (the actor) and
            ``measure_seconds``.

        Raises:
            TimeoutError: If the actor did not answer within ``timeout_s`` (it is killed and replaced).
            RuntimeError: If the actor died or the inner measurer failed.
        """
        out = self.measure_many([model_bytes])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def measure_many(self, files: list) -> list:
        """Measures every file of ``files``, each on the first free actor of the pool (at most ``actors`` at once).
        Returns, in order, each file's metrics or the exception that failed it (a ``TimeoutError`` after
        ``timeout_s``, whose actor is killed and replaced; a ``RuntimeError`` when the actor died).

        Args:
            files: Full-int8 TFLite files.

        Returns:
            One entry per file, in order: its metrics (as :meth:`measure`) or the exception that failed it.
        """
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        files = list(files)
        results: list = [None] * len(files)
        todo = list(range(len(files)))[::-1]
        free = list(range(self.actors))[::-1]
        running: dict[Any, tuple[int, int, float]] = {}  # object ref -> (file index, pool slot, dispatch time)
        while todo or running:
            while todo and free:
                k, slot = todo.pop(), free.pop()
                ref = self._actor(slot).measure.remote(files[k])
                running[ref] = (k, slot, time.perf_counter())
            self.max_in_flight = max(self.max_in_flight, len(running))
            now = time.perf_counter()
            wait_s = max(0.0, min(t + self.timeout_s for _, _, t in running.values()) - now)
            done, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
            for ref in done:
                k, slot, t = running.pop(ref)
                try:
                    results[k] = {**ray.get(ref), "measure_seconds": time.perf_counter() - t}
                except ray.exceptions.RayActorError as err:
                    self._pool[slot] = None
                    results[k] = RuntimeError(f"the remote measurer on {self.device!r} died: {err}")
                except Exception as err:  # noqa: BLE001 - the inner measurer's error fails this file only
                    results[k] = RuntimeError(
                        f"the remote measurer on {self.device!r} failed: {type(err).__name__}: {err}"
                    )
                free.append(slot)
            now = time.perf_counter()
            for ref, (k, slot, t) in list(running.items()):
                if now - t >= self.timeout_s:
                    del running[ref]
                    self._kill(slot)
                    results[k] = TimeoutError(
                        f"the remote measurer on {self.device!r} did not answer within {self.timeout_s:g} s"
                    )
                    free.append(slot)
        return results

    def _kill(self, slot: int):
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        if self._pool[slot] is not None:
            ray.kill(self._pool[slot])
            self._pool[slot] = None

    def shutdown(self) -> None:
        """Kills the actors, and the local Ray if this measurer started it.

        Returns:
            None.
        """
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        if ray.is_initialized():
            for slot in range(self.actors):
                self._kill(slot)
            if self._started_ray:
                ray.shutdown()
        self._pool, self._started_ray = [None] * self.actors, False

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "inner": self.inner.get_config(),
            "device": self.device,
            "address": self.address,
            "num_cpus": self.num_cpus,
            "resources": self.resources,
            "node_id": self.node_id,
            "timeout_s": self.timeout_s,
            "actors": self.actors,
        }

    def cache_key(self) -> dict:  # the pool's size changes when, not what, is measured
        return {"kind": self.kind, "inner": self.inner.cache_key(), "device": self.device}

    def __getstate__(self):  # the actor handles stay with the process that made them
        state = dict(self.__dict__)
        state["_pool"], state["_started_ray"] = [None] * self.actors, False
        return state


MEASURERS: dict[str, type[Measurer]] = {
    "litert": LiteRTLatency,
    "micro": MicroBudget,
    "ethos_u": EthosUMeasurer,
    "ray": RayRemoteMeasurer,
}


def measurer_from_config(config) -> Measurer:
    """A measurer from its config, as a scenario names it.

    Args:
        config: ``{"kind": "litert" | "micro" | "ethos_u" | "ray", **options}`` (the options are the class's
            constructor arguments), a kind alone as a string, or a `Measurer` (returned as it is).

    Returns:
        A new `Measurer` (or ``config`` itself).

    Raises:
        ValueError: If ``config`` has no ``kind``, the kind is unknown, an option is unknown (the message lists
            the allowed ones) or invalid.
        ImportError: For ``"ray"`` without Ray installed.

    Example:
        ```python
        measurer_from_config({"kind": "litert", "num_threads": 2})   # LiteRTLatency(num_threads=2)
        measurer_from_config("micro")                                # MicroBudget()
        ```
    """
    if isinstance(config, Measurer):
        return config
    if isinstance(config, str):
        config = {"kind": config}
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"a measurer config is a mapping with a 'kind' ({', '.join(MEASURERS)}), got {config!r}")
    kind = config["kind"]
    if kind not in MEASURERS:
        raise ValueError(f"measurer kind {kind!r} is unknown; choose from {', '.join(MEASURERS)}")
    options = {k: v for k, v in config.items() if k != "kind"}

    allowed = [n for n in inspect.signature(MEASURERS[kind].__init__).parameters if n != "self"]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise ValueError(
            f"measurer {kind!r}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: kind, {', '.join(allowed)}"
        )
    try:
        return MEASURERS[kind](**options)
    except TypeError as err:
        raise ValueError(f"measurer {kind!r}: {err}") from None


def int8_model(space, arch, seed: int = 0, calibration_samples: int = 16) -> bytes:
    """An architecture as a full-int8 TFLite file for measuring its cost, as a device runs it.

    The model is freshly initialized and calibrated on uniform random images in [0, 1) (cost does not depend on the
    weights' values), with batch 1 and static shapes. Sets Keras's global random seed to ``seed``.

    Args:
        space: The `SearchSpace` (its input shape is the file's).
        arch: An architecture of the space.
        seed: Seed of the weights and the calibration images.
        calibration_samples: How many random images calibrate the quantization ranges.

    Returns:
        The ``.tflite`` file's bytes.

    Raises:
        ValueError: If ``arch`` does not belong to the space.

    Example:
        ```python
        data = int8_model(tiny_space(), tiny_space().reference())
        LiteRTLatency().measure(data)
        ```
    """
    keras.utils.set_random_seed(seed)
    model = build_model(space, arch)
    rep = np.random.default_rng(seed).random((calibration_samples, *space.input_shape), dtype=np.float32)
    return to_tflite(model, rep, batch_size=1)


def convert_job(space_config: dict, arch_text: str, seed: int = 0) -> dict:
    """Module-level (a pool worker runs it): ``{"bytes": int8 file, "convert_seconds"}`` of one architecture."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    t0 = time.perf_counter()
    data = int8_model(SearchSpace.from_config(space_config), Architecture.parse(arch_text), seed)
    return {"bytes": data, "convert_seconds": time.perf_counter() - t0}


def measure_bytes(data, space, arch, measurers) -> dict:
    """Runs every measurer on the int8 file ``data`` (None when none needs it): ``{measurer index: metrics}``."""
    out = {}
    for i, m in enumerate(measurers):
        t1 = time.perf_counter()
        metrics = m.measure(data) if m.needs_model else m.measure_architecture(space, arch)
        out[i] = {**metrics, "measure_seconds": time.perf_counter() - t1}
    return out


def measure_all(space, arch, measurers, seed: int = 0) -> dict:
    """Converts ``arch`` once (when a measurer needs the file) and runs every measurer on it. Returns
    ``{"metrics": {measurer index: metrics}, "convert_seconds": ...}``."""
    t0 = time.perf_counter()
    data = int8_model(space, arch, seed) if any(m.needs_model for m in measurers) else None
    convert_s = time.perf_counter() - t0
    out = {}
    for i, m in enumerate(measurers):
        t1 = time.perf_counter()
        metrics = m.measure(data) if m.needs_model else m.measure_architecture(space, arch)
        out[i] = {**metrics, "measure_seconds": time.perf_counter() - t1}
    return {"metrics": out, "convert_seconds": convert_s}
