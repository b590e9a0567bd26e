"""Process-wide llama.cpp setup: backend init once, and its log kept off the terminal."""

from __future__ import annotations

import ctypes
import os
import threading
from importlib.metadata import PackageNotFoundError, version

import llama_cpp as L

_lock = threading.Lock()
_ready = False


@L.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp logs to stderr by default, which corrupts a TUI and drowns CLI errors.
    return None


def ensure_backend() -> None:
    global _ready
    with _lock:
        if _ready:
            return
        L.llama_log_set(_quiet_log, ctypes.c_void_p())
        L.llama_backend_init()
        _ready = True


def default_threads() -> int:
    """Decode threads: TTS_THREADS, else the CPUs this process may run on (a container's
    limit, not the host's count)."""
    env = os.environ.get("TTS_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def backend_info() -> dict[str, object]:
    """What `tts doctor` prints: the llama.cpp build and whether it can offload to a GPU."""
    ensure_backend()
    try:
        pkg = version("llama-cpp-python")
    except PackageNotFoundError:
        pkg = "unknown"
    system = L.llama_print_system_info().decode("utf-8", "replace").strip()
    return {
        "llama_cpp_python": pkg,
        "gpu_offload": bool(L.llama_supports_gpu_offload()),
        "mmap": bool(L.llama_supports_mmap()),
        "threads": default_threads(),
        "max_parallel_sequences": int(L.llama_max_parallel_sequences()),
        "system_info": system,
    }
