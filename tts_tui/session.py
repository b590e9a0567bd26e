"""Wiring shared by every front end: model -> engine -> generator -> verifier -> strategy.

The CLI, `tts eval` and the TUI all build a `Solver` and consume the same events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from tts_tui.catalog import load_catalog, resolve_model
from tts_tui.catalog.fetch import Progress
from tts_tui.catalog.gguf_file import block_count
from tts_tui.backends.llamacpp import BranchEngine, LlamaModel
from tts_tui.backends.llamacpp.tap import can_tap
from tts_tui.errors import InputError, ModelError
from tts_tui.search import events as ev
from tts_tui.backends.llamacpp.generator import LlamaGenerator
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Result, Search
from tts_tui.search.strategies import run_strategy, validate
from tts_tui.verify.answers import MathAnswers
from tts_tui.verify.probe import layer_name
from tts_tui.verify.scorers import (ConfidenceScorer, DeepConfScorer, EntropyScorer, PRMFormat, PRMScorer,
                                    SelfCertaintyScorer, SelfJudgeScorer)

VERIFIERS = ("confidence", "self-judge", "prm", "probe", "deepconf", "self-certainty", "entropy")
TRAINING_FREE = {"confidence": ConfidenceScorer, "deepconf": DeepConfScorer,
                 "self-certainty": SelfCertaintyScorer, "entropy": EntropyScorer}


def probe_file_for(model_path: Path) -> Path:
    """The probe file the model's verifier reads: the first usable of `probe_files`, else
    the first there (named in its refusal), else where `tts verifier train` writes."""
    return _usable_probe(model_path)[1]


def _usable_probe(model_path: Path):
    """(the model's probe or None, its file, why there is none). The user's own probe comes
    first; one it cannot use (another format, a layer the model cannot tap) leaves the
    shipped one in use rather than no probe."""
    from tts_tui.catalog.fetch import known_sha256
    from tts_tui.verifier_train import probe_files, probe_path
    from tts_tui.verify.probe import Probe

    sha = known_sha256(model_path)[1]  # once: it names the file and checks it
    refused: list[tuple[Path, str]] = []
    for path in probe_files(model_path, sha):
        try:
            probe = Probe.load(path, sha)
        except InputError as exc:
            refused.append((path, f"unusable: {exc}"))
            continue
        why = _untappable(probe.layer, model_path)
        if why is None:
            return probe, path, None
        refused.append((path, why))
    if refused:
        return None, *refused[0]
    return None, probe_path(model_path, sha), "not trained (tts verifier train)"


def _untappable(layer: int | None, model_path: Path) -> str | None:
    """Why the engine cannot read `layer` of the model (None: it can). The engine would load
    at the final-norm state instead (`resolve_layer`) and the probe be refused."""
    if layer is None:
        return None
    n_layer = block_count(model_path)
    if n_layer is not None and not can_tap(layer, n_layer):
        return f"unusable: it reads {layer_name(layer)}, which a {n_layer}-layer model cannot tap"
    return None


def require_probe(model_path: Path, layer: int | str | None, n_layer: int | None = None):
    """The model's usable probe, for an engine reading `layer` (an `EngineOptions.hidden_layer`,
    resolved against `n_layer` where that is given; None: the final-norm state), or an
    InputError saying why there is none to score with."""
    probe, path, why = _usable_probe(model_path)
    if probe is None and not path.is_file():
        raise InputError(f"no probe verifier is trained for {model_path.name}: "
                         f"tts verifier train --model {model_path} --data FILE.jsonl")
    if probe is None:
        raise InputError(f"the probe verifier is {why}" + ("" if str(path) in why else f" ({path})"))
    if layer == "probe":
        return probe  # an engine opened at the probe's layer reads it (a usable probe's layer can be tapped)
    if isinstance(layer, str):
        if n_layer is None:
            return probe  # the layer is known once the model loads: the engine checks it then
        layer = resolve_layer(layer, model_path, n_layer)
    if probe.layer != layer:
        # states of another layer would be scored as if they were its own
        raise InputError(f"the probe reads {layer_name(probe.layer)}; this engine captures {layer_name(layer)} "
                         "(--layer, or the probe changed since it loaded): give the probe's layer, or start again")
    return probe


def probe_status(model_path: Path) -> tuple[bool, str]:
    """(whether a probe for the model loads, what to say about it): a file that is there
    but unreadable, of an old format or another model's is not a usable probe."""
    probe, path, why = _usable_probe(model_path)
    if probe is None:
        return False, why
    return True, f"trained, reads {layer_name(probe.layer)} ({path})"


def default_verifier_for(model_path: Path, layer: int | str | None = "probe", n_layer: int | None = None) -> str:
    """The probe where a usable one is trained for the model and an engine opened with
    `layer` (an `EngineOptions.hidden_layer`) reads its layer, else confidence."""
    if n_layer is None and layer != "probe":
        n_layer = block_count(model_path)
    try:
        require_probe(model_path, layer, n_layer)
    except (InputError, OSError):
        return "confidence"
    return "probe"


def probe_layer_for(model_path: Path) -> int | None:
    """The layer the model's usable probe reads (None: the final-norm state, or no probe)."""
    try:
        probe, _, _ = _usable_probe(model_path)
    except OSError:
        return None  # no usable probe: `probe_status` says why where it matters
    return probe.layer if probe is not None else None


@dataclass
class EngineOptions:
    n_ctx: int = 8192
    n_seq_max: int = 64
    n_threads: int | None = None
    n_gpu_layers: int = -1
    # The layer a captured state comes from: "probe" = the one the model's probe reads,
    # "auto" = 60% of the depth, a number, or None = the final-norm state.
    hidden_layer: int | str | None = "probe"


def engine_layer(option: int | str | None, verifier: str | None, keeps_states: bool = False) -> int | str | None:
    """The layer option for a run whose verifier is fixed before the model loads. Only the
    probe (or --save-states) reads a middle layer's state, and a tap costs on every decode
    (llama.cpp calls it back for every tensor of the graph), so a run scored by anything
    else leaves the default "probe" layer untapped. A layer the user named is kept."""
    if option == "probe" and verifier is not None and verifier != "probe" and not keeps_states:
        return None
    return option


def resolve_layer(option: int | str | None, model_path: Path | None, n_layer: int) -> int | None:
    """The layer an engine reads (None: the final-norm state). A probe's layer the model
    cannot tap (its last, or one it lacks) falls back to the final-norm state, so the model
    still loads; the probe is then refused when it scores, with a reason. "auto" stays
    below the last layer (whose rows are outputs only)."""
    if option == "probe":
        layer = probe_layer_for(model_path) if model_path is not None else None
        return layer if layer is not None and can_tap(layer, n_layer) else None
    if option == "auto":
        return min(round(0.6 * n_layer), n_layer - 2) if n_layer >= 3 else None
    return option if option is None else int(option)


class Solver:
    """One loaded policy (and optional PRM); solves problems with any strategy."""

    def __init__(
        self,
        model: str | None = None,
        prm: str | None = None,
        options: EngineOptions | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        self.options = options or EngineOptions()
        self.model_name = model
        self.model_path: Path = resolve_model(model, on_progress=on_progress)
        self.model = LlamaModel(self.model_path, n_gpu_layers=self.options.n_gpu_layers)
        try:
            self.engine = self._engine(self.model, self.options.hidden_layer)
        except BaseException:
            self.model.close()  # a layer it cannot read: the weights are not left loaded
            raise
        self.generator = LlamaGenerator(self.engine)
        self.prm_name = prm
        self._prm: PRMScorer | None = None
        self._prm_progress = on_progress
        self.answers = MathAnswers()
        self.lock = threading.Lock()  # held by a solve and by close: the model is never freed under a decode
        self.closed = False

    def _engine(self, model: LlamaModel, layer: int | str | None = None) -> BranchEngine:
        o = self.options
        return BranchEngine(model, n_ctx=o.n_ctx, n_seq_max=o.n_seq_max, n_threads=o.n_threads,
                            hidden_layer=resolve_layer(layer, model.path, model.n_layer))

    def scorer(self, verifier: str):
        if verifier in TRAINING_FREE:
            return TRAINING_FREE[verifier]()
        if verifier == "probe":
            return self._probe_scorer()
        if verifier == "self-judge":
            return SelfJudgeScorer(self.engine)
        if verifier == "prm":
            return self._prm_scorer()
        raise InputError(f"unknown verifier {verifier!r} (choose from: {', '.join(VERIFIERS)})")

    def default_verifier(self) -> str:
        """The probe where one is trained for this model and the engine reads its layer, else
        confidence (a probe retrained at another layer since the model was loaded)."""
        return default_verifier_for(self.model_path, self.engine.hidden_layer, self.model.n_layer)

    def _probe_scorer(self):
        from tts_tui.verify.probe import ProbeScorer

        # read once per loaded model: an eval keys its rows by the probe's digest at its
        # start, so a probe retrained meanwhile is read by the next `tts` command (or TUI)
        if getattr(self, "_probe", None) is None:
            probe = require_probe(self.model_path, self.engine.hidden_layer)
            self._probe = ProbeScorer(probe)
        return self._probe

    def _prm_scorer(self) -> PRMScorer:
        if self._prm is None:
            if not self.prm_name:
                raise InputError("--verifier prm needs --prm MODEL (a catalog id or a GGUF path)")
            path = resolve_model(self.prm_name, role="verifier", on_progress=self._prm_progress)
            entry = load_catalog().get(self.prm_name)
            fmt = PRMFormat(**entry.prm) if entry is not None and entry.prm else PRMFormat()
            prm_model = LlamaModel(path, n_gpu_layers=self.options.n_gpu_layers)
            self._prm = PRMScorer(self._engine(prm_model), fmt)
        return self._prm

    def new_search(
        self,
        problem: str,
        strategy: str,
        params: SearchParams,
        verifier: str = "confidence",
        listener: ev.Listener | None = None,
        cancel: threading.Event | None = None,
    ) -> Search:
        if not problem or not problem.strip():
            raise InputError("the problem is empty")
        validate(strategy, params)
        return Search(
            self.generator,
            problem.strip(),
            params,
            self.answers,
            scorer=self.scorer(verifier),
            listener=listener,
            cancel=cancel,
        )

    def solve(self, problem: str, strategy: str, params: SearchParams, verifier: str = "confidence",
              listener: ev.Listener | None = None, cancel: threading.Event | None = None,
              capture: bool = False) -> tuple[Result, Search]:
        """Run a strategy; `capture` records hidden states and token statistics on every
        node whatever the verifier (the same tokens: capture changes no sampling)."""
        with self.lock:  # one context: one search at a time
            if self.closed:
                raise ModelError("the model was closed")  # a freed context would crash llama.cpp
            search = self.new_search(problem, strategy, params, verifier, listener, cancel)
            if capture:
                search.capture = search.confidence = True
            try:
                result = run_strategy(strategy, search)
            finally:
                search.release_all()
            return result, search

    def close(self) -> None:
        """Free the model and contexts, once any search decoding on them has ended."""
        with self.lock:
            self.closed = True
            self.engine.close()
            self.model.close()
            if self._prm is not None:
                self._prm.engine.close()
                self._prm.engine.model.close()


# Verifiers that read only what an OpenAI-compatible server returns (token logprobs), and
# a PRM on a vLLM server of its own (--prm-url).
REMOTE_VERIFIERS = ("confidence", "deepconf", "self-judge", "prm")


class RemoteSolver:
    """Solves with any strategy against an OpenAI-compatible server (llama-server, vLLM,
    SGLang): the same search, the server's decoding. Same `solve` as `Solver`."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 template: str | None = None, prm_url: str | None = None, prm_model: str | None = None,
                 prm_api_key: str | None = None) -> None:
        from tts_tui.backends.openai import OpenAIClient, RemoteGenerator

        self.model_name = model
        self.model_path = Path(model)  # a name, for run records
        self.client = OpenAIClient(base_url, api_key=api_key)
        self.generator = RemoteGenerator(self.client, model, concurrency=concurrency, template=template)
        self.answers = MathAnswers()
        self.lock = threading.RLock()
        self._caps = None
        self._prm = None
        if prm_url:
            from tts_tui.backends.openai.prm import RemotePRM

            if not prm_model:
                raise InputError("--prm-url needs --prm NAME (the PRM's model name on that server)")
            # its own key (or none): the policy's key is never sent to another host
            self._prm = RemotePRM(OpenAIClient(prm_url, api_key=prm_api_key), prm_model)
        self._prm_checked = False

    def capabilities(self):
        """What the server can do (probed once, at the first solve)."""
        from tts_tui.backends.openai.capabilities import probe

        with self.lock:
            if self._caps is None:
                self._caps = probe(self.client, self.model_name)
                self.generator.slots.set(self._caps.slots)  # no more requests in flight than it decodes
            return self._caps

    def default_verifier(self) -> str:
        return "confidence"

    def scorer(self, verifier: str, generator=None):
        if verifier not in REMOTE_VERIFIERS:
            why = ("reads the model's hidden states, which servers do not expose" if verifier == "probe"
                   else "needs the local engine")
            raise InputError(f"the {verifier} verifier {why}; on a server use: {', '.join(REMOTE_VERIFIERS)}")
        if verifier == "self-judge":
            from tts_tui.backends.openai.generator import RemoteJudge
            from tts_tui.verify.scorers import JUDGE_QUESTION

            return RemoteJudge(generator or self.generator, JUDGE_QUESTION)
        if verifier == "prm":
            if self._prm is None:
                raise InputError("the prm verifier on a server needs --prm-url URL and --prm NAME "
                                 "(a PRM served by vLLM's pooling API, e.g. Qwen/Qwen2.5-Math-PRM-7B)")
            return self._prm
        return TRAINING_FREE[verifier]()

    def solve(self, problem: str, strategy: str, params: SearchParams, verifier: str = "confidence",
              listener: ev.Listener | None = None, cancel: threading.Event | None = None) -> tuple[Result, Search]:
        if not problem or not problem.strip():
            raise InputError("the problem is empty")
        validate(strategy, params)
        self.check(strategy, verifier, params)
        gen = self.generator.metered()  # this solve's counts, whatever runs beside it on this server
        search = Search(gen, problem.strip(), params, self.answers, scorer=self.scorer(verifier, gen),
                        listener=listener, cancel=cancel)
        result = run_strategy(strategy, search)
        result.stats.update(gen.stats())
        return result, search

    def check(self, strategy: str, verifier: str, params: SearchParams | None = None) -> None:
        """Refuse, in one line, what the server cannot serve."""
        self.scorer(verifier)
        if verifier == "prm" and not self._prm_checked:
            self._prm.check()  # the PRM's server pools and answers a reward per step tag
            self._prm_checked = True
        cut = bool(params is not None and params.adaptive is not None and params.adaptive.cut)
        why = self.capabilities().refuse(strategy, verifier, cut, own_template=self.generator.template is not None)
        if why:
            raise InputError(f"{self.client.shown}: {why}")

    def close(self) -> None:
        """Nothing is held locally."""
