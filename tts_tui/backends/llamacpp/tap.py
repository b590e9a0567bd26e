"""One layer's residual stream, read out of `llama_decode` through llama.cpp's `cb_eval`.

llama.cpp calls the callback for every node of the compute graph twice over: first to ask
whether we want the node's result, then, for the nodes we said yes to, once it is
computed. Saying yes makes the scheduler stop there and sync, so the tap says yes only
while `active` (the decodes whose states a verifier reads) and only for its layer's
output (`l_out-K`, the block's output before the next layer's norm). A middle layer
carries a row for every token in the batch, not just the outputs: row i is batch token i.
"""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
from llama_cpp._ggml import libggml

libggml.ggml_get_name.restype = ctypes.c_char_p
libggml.ggml_get_name.argtypes = [ctypes.c_void_p]
libggml.ggml_nelements.restype = ctypes.c_int64
libggml.ggml_nelements.argtypes = [ctypes.c_void_p]
libggml.ggml_backend_tensor_get.restype = None
libggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
_GGML_TYPE_F32 = 0  # `type` is the first field of struct ggml_tensor


def tensor_name(tensor: int) -> bytes:
    """A graph node's name (b"l_out-17", b"result_norm", ...)."""
    return libggml.ggml_get_name(tensor) or b""


def read_f32(tensor: int, width: int) -> np.ndarray | None:
    """A computed F32 tensor's data as (rows, width), copied through its backend (so a
    tensor in GPU memory comes out too); None for any other type."""
    if ctypes.c_int.from_address(tensor).value != _GGML_TYPE_F32:
        return None
    out = np.empty(int(libggml.ggml_nelements(tensor)), dtype=np.float32)
    libggml.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, out.nbytes)
    return out.reshape(-1, width)


class LayerTap:
    """Copies layer `layer`'s output rows out of each decode made while `active`."""

    def __init__(self, layer: int, width: int) -> None:
        self.layer, self.width = layer, width
        self._name = f"l_out-{layer}".encode()
        self.active = False
        self.rows: np.ndarray | None = None  # (tokens in the last active decode, width)
        self.error: BaseException | None = None  # raised in the callback; the engine re-raises it
        # llama.cpp holds a bare pointer to this: it must live as long as the context
        self.callback = L.ggml_backend_sched_eval_callback(self._on_tensor)

    def take(self) -> np.ndarray | None:
        """The rows the last active decode produced (None if it produced none); clears them."""
        rows, self.rows = self.rows, None
        return rows

    def _on_tensor(self, tensor: int, ask: bool, _user: int) -> bool:
        # An exception must not escape into C: ctypes would print it and return False,
        # which ends the graph's compute early without an error. It is kept for the engine
        # to raise after the decode. (A Ctrl-C is held back by the engine during a decode.)
        try:
            if not self.active or tensor_name(tensor) != self._name:
                return not ask  # ask: "no, not this one"; a computed node: "go on"
            if ask:
                return True
            self.rows = read_f32(tensor, self.width)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the engine after the decode
            self.rows, self.error = None, exc
            return not ask
        return True


def can_tap(layer: int, n_layer: int) -> bool:
    """Whether layer `layer` of an `n_layer`-layer model has a row per batch token: the
    last keeps only the output rows (its state is the final-norm one's input)."""
    return 0 <= layer < n_layer - 1


def layer_refusal(model_name: str, layer: int, n_layer: int) -> str | None:
    """Why layer `layer` of the model cannot be tapped, in one line, or None."""
    if can_tap(layer, n_layer):
        return None
    return (f"{model_name} has layers 0-{n_layer - 2} to read before its last (not {layer}); "
            "the last is read as the final-norm state (--layer final)")


def unsupported(model_ptr: int) -> str | None:
    """Why a model's layer cannot be tapped row for row, or None: recurrent, hybrid and
    sliding-window models may split or reorder a batch into several ubatches."""
    if L.llama_model_is_recurrent(model_ptr) or L.llama_model_is_hybrid(model_ptr):
        return "a recurrent or hybrid model"
    if int(L.llama_model_n_swa(model_ptr)) > 0:
        return "a sliding-window model"
    return None
