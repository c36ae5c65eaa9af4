"""Prometheus metrics of one service instance (its own ``CollectorRegistry``).

Why a registry per app: two apps in one process (tests, the load test's side-by-side run) must
not share counters, and prometheus-client's default registry refuses a second registration.

Metric names (the web page and dashboards read these; ``voice`` is the configured voice name):

====================================  =========  ============================================
``hifitrt_requests_total``            counter    labels ``endpoint``, ``code`` (HTTP status)
``hifitrt_errors_total``              counter    label ``kind`` (the error ``type`` answered)
``hifitrt_requests_in_flight``        gauge      requests being handled now
``hifitrt_queue_depth``               gauge      ``voice``: mel windows waiting for an engine
``hifitrt_queue_wait_seconds``        histogram  ``voice``: enqueue -> engine call start
``hifitrt_batch_size``                histogram  ``voice``: windows per engine call
``hifitrt_engine_seconds``            histogram  ``voice``: duration of one engine call
``hifitrt_audio_seconds_total``       counter    ``voice``: audio produced (seconds)
``hifitrt_cache_hits_total``          counter    ``/v1/audio/speech`` cache hits
``hifitrt_cache_misses_total``        counter    ``/v1/audio/speech`` cache misses
``hifitrt_gpu_utilization_percent``   gauge      ``gpu``: NVML utilization (GPU machines only)
``hifitrt_gpu_memory_used_bytes``     gauge      ``gpu``: NVML memory used (GPU machines only)
====================================  =========  ============================================

Mean batch size = ``hifitrt_batch_size_sum / hifitrt_batch_size_count`` (Triton's
``nv_inference_count / nv_inference_exec_count``). GPU gauges come from ``nvidia-ml-py``
(``pynvml``) and are absent when it or a GPU is missing.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The counters, gauges and histograms the service updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hifitrt_requests", "HTTP requests answered", ["endpoint", "code"], registry=r)
        self.errors = Counter("hifitrt_errors", "error answers by kind", ["kind"], registry=r)
        self.in_flight = Gauge("hifitrt_requests_in_flight", "requests being handled", registry=r)
        self.queue_depth = Gauge("hifitrt_queue_depth", "mel windows waiting for an engine", ["voice"], registry=r)
        self.queue_wait = Histogram("hifitrt_queue_wait_seconds", "time from enqueue to engine call", ["voice"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("hifitrt_batch_size", "mel windows per engine call", ["voice"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.engine_seconds = Histogram("hifitrt_engine_seconds", "duration of one engine call", ["voice"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("hifitrt_audio_seconds", "audio produced, seconds", ["voice"], registry=r)
        self.cache_hits = Counter("hifitrt_cache_hits", "speech cache hits", registry=r)
        self.cache_misses = Counter("hifitrt_cache_misses", "speech cache misses", registry=r)
        gpu = _NvmlCollector.create()
        if gpu is not None:
            r.register(gpu)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NvmlCollector:
    """GPU utilization and memory per device, read from NVML at scrape time."""

    def __init__(self, nvml: Any, count: int) -> None:
        self.nvml = nvml
        self.count = count

    @classmethod
    def create(cls) -> "_NvmlCollector | None":
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception:  # no nvidia-ml-py, no driver, no GPU: the gauges are simply absent
            return None
        return cls(pynvml, count) if count else None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        util = GaugeMetricFamily("hifitrt_gpu_utilization_percent", "GPU utilization (NVML)", labels=["gpu"])
        memory = GaugeMetricFamily("hifitrt_gpu_memory_used_bytes", "GPU memory used (NVML)", labels=["gpu"])
        for i in range(self.count):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(i)
                util.add_metric([str(i)], float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                memory.add_metric([str(i)], float(self.nvml.nvmlDeviceGetMemoryInfo(handle).used))
            except Exception as exc:  # a GPU that went away must not break /metrics
                log.warning("NVML read failed for GPU %d: %s", i, exc)
        yield util
        yield memory
