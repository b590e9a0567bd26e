"""Final-answer extraction and mathematical equivalence, backed by math-verify (sympy).

Extraction, first hit wins: the last \\boxed{}; a text that is itself a short answer (a
gold such as "x \\leq 2" or "(3, -1)", taken whole); after the last "answer is" /
"Final Answer:", math-verify's LaTeX extraction, else the GSM8K phrase rules ("366
downloads over the three months" is 366, "correct: ..." is a verdict, not an answer);
math-verify's LaTeX and expression extraction over the whole text; the last number.

Equivalence: a cheap path settles what needs no algebra (the same text; plain numbers,
compared as math-verify would, a percent matching either its value or its fraction).
Units count only as whole trailing words ("5 kg", "18 dollars", never the g of
"x^2 + 2g"), and two different units are never equal. Everything else goes to
math-verify in a persistent worker subprocess, so that a call is bounded in time from
any thread (math-verify's own limit uses SIGALRM, which only the main thread may set):
a call past its limit kills the worker and answers False without remembering it, the
next call starts a new one, and the worker ends with this process.

Both never raise, whatever the input string.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from typing import IO, Any, NamedTuple

# --- extraction ---------------------------------------------------------------------

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUM_RE = re.compile(_NUM)
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*$|\.\s+|\n|$)", re.I)
_FINAL = re.compile(r"final answer(?:\s+is)?[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*$|\n|$)", re.I)
# Where a stated answer starts; math-verify's anchored extraction reads on from the last.
_ANCHOR = re.compile(r"\banswer(?:\s+is\b|\s*:)", re.I)
# What math-verify's LaTeX extraction can find: a math environment or a plain \frac.
_LATEX_ENV = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\frac")
# "366 downloads over the three months": a number, then words that are not LaTeX.
_NUM_THEN_PROSE = re.compile(rf"^\\?\$?\s*({_NUM})\s*(%|\\%)?\s+(?:[A-Za-z]{{2,}}\b.*)$", re.S)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]")
# "The final answer is correct: Claire will eat 7 dozens...": a verdict, not an answer.
_VERDICT = re.compile(r"^(?:correct|incorrect|wrong|as follows)\b[\s:,.]*", re.I)
# A sentence rather than a math expression: starts with a word, no LaTeX or structure.
_SENTENCE = re.compile(r"^[A-Za-z]{2,}\s[^\\()\[\]{}=]*$")
# "the pair (2, 3)": words in front of the math.
_LEADING_PROSE = re.compile(r"^(?:[A-Za-z]{2,}\s+)+(?=[-(\[{\\\d])")
# "\frac{1}{3} of the cake": words after the math, with no math of their own.
_TRAILING_PROSE = re.compile(r"\s+[A-Za-z]{2,}\b[^\\\d=<>^$]*$")
# Words of prose (not LaTeX commands); a short answer has few of them.
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_COMMAND_WITH_ARG = re.compile(r"\\[A-Za-z]+(?:\{[^{}]*\})?")
_TEXT_ARG = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{[^{}]*\}")
_MATH_NAMES = frozenset({"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "inf", "infinity"})
_MATHY = re.compile(r"[\d\\=<>^_{}()\[\]+*/|-]|^[A-Za-z]$")


def _boxed_all(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...}, braces matched."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            depth += c == "{"
            depth -= c == "}"
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1].strip())
    return out


def extract_answer(text: str) -> str | None:
    """The final answer in a solution (or a gold answer taken whole); None if none."""
    try:
        if not isinstance(text, str) or not text.strip():
            return None
        boxed = [b for b in _boxed_all(text) if b]
        if boxed:
            return boxed[-1]
        return (
            _bare_answer(text)
            or _anchored_answer(text)
            or _worker_extract(text, anchored=False)
            or _last_number(text)
        )
    except Exception:
        return None


def _strip_delims(s: str) -> str:
    """"$x$", "$$x$$", "\\(x\\)", "\\[x\\]" -> "x" when they wrap the whole string."""
    s = s.strip()
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            inner = s[len(left) : -len(right)]
            if "$" not in inner.replace("\\$", ""):
                return inner.strip()
    return s


def _bare_answer(text: str) -> str | None:
    """The text itself when it is a short answer rather than a solution: a gold such as
    "x \\leq 2", "[-2, 7)", "\\$18" or "28 percent". Taking these whole keeps the
    structure that the last number would lose."""
    s = _strip_delims(text).rstrip(".").strip()
    if not s or len(s) > 300 or "$" in s.replace("\\$", "").lstrip("$"):
        return None
    if re.search(r"[:#]|[.?!]\s", s) or not _MATHY.search(s) or ("\n" in s and "\\begin" not in s):
        return None
    if "=" in s and not re.search(r"[A-Za-z]", s.split("=")[0]):  # "48/2 = 24" is a computation
        return None
    words = _PROSE_WORD.findall(_COMMAND_WITH_ARG.sub(" ", _TEXT_ARG.sub(" ", s)))
    if len(words) > 2 or (words and "\n" in s):
        return None
    first = re.match(r"[A-Za-z]{2,}", s)  # "so x = 2" is prose; "sqrt(2)/2" is not
    if first and first.group(0).lower() not in _MATH_NAMES:
        return None
    return s


def _anchored_answer(text: str) -> str | None:
    """What follows the last "answer is" / "Final Answer:": math-verify's LaTeX
    extraction when there is LaTeX to find, else the GSM8K phrase rules."""
    anchors = list(_ANCHOR.finditer(text))
    if not anchors:
        return None
    tail = text[anchors[-1].start() :][:600]
    if _LATEX_ENV.search(tail):
        found = _worker_extract(tail, anchored=True)
        if found:
            return found
    for rx in (_FINAL, _ANSWER_IS):
        hits = rx.findall(text)
        if hits:
            ans = _from_phrase(hits[-1])
            if ans:
                return ans
    return None


def _from_phrase(phrase: str) -> str:
    """The answer in what follows "answer is": the leading number when prose follows
    it ("366 downloads over the three months"), the first number of a sentence, the
    math without the words around it ("the pair (2, 3)"), else the phrase itself; ""
    when it is only a verdict ("correct.")."""
    ans = _VERDICT.sub("", phrase.strip()).rstrip(".").strip()
    m = _NUM_THEN_PROSE.match(ans)
    if m and not _LATEX_COMMAND.search(ans):  # keep LaTeX such as "2 \sin b"
        return m.group(1).replace(",", "") + ("%" if m.group(2) else "")
    if _SENTENCE.match(ans):  # "she will eat 7 dozens in 4 weeks": its first number
        first = _NUM_RE.search(ans)
        if first:
            return first.group(0).replace(",", "")
    ans = _LEADING_PROSE.sub("", ans)
    if _LATEX_COMMAND.search(ans):
        ans = _TRAILING_PROSE.sub("", ans)
    return ans.strip()


def _last_number(text: str) -> str | None:
    nums = _NUM_RE.findall(text)
    return nums[-1].rstrip(".") if nums else None


def _worker_extract(text: str, anchored: bool) -> str | None:
    """math-verify's extraction, bounded in time; None when it finds nothing."""
    if not re.search(r"[\d$\\]", text):
        return None
    out = _WORKER.call("extract", text, anchored)
    return out if isinstance(out, str) and out.strip() else None


# --- equivalence --------------------------------------------------------------------


class _Parts(NamedTuple):
    """An answer split for comparison: the math, its unit word, whether it was a percent."""

    core: str
    unit: str | None
    pct: bool


_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
# LaTeX spacing, but not a matrix row break (two backslashes) before a space or a comma.
_THIN_SPACES = re.compile(r"(?<!\\)\\[,!]")
_WIDE_SPACES = re.compile(r"(?<!\\)\\(?:[;: ]|quad|qquad)")
_DEGREES = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree)")
_CURRENCY = re.compile(r"^(?:\\\$|\$)\s*")
_PERCENT = re.compile(r"\s*(?:\\%|%|\bpercent(?:age)?\b|\bpct\b)\s*$", re.I)
# A quantity and a unit of whole words after it: "5 kg", "\sqrt{2} cm", "18 dollars".
_UNIT_TAIL = re.compile(r"^(?P<core>.*?[\d}).])\s*(?P<unit>[A-Za-z][A-Za-z. ]*?(?:\^\{?[23]\}?)?)\.?$")
_SINGLE_LETTER_UNITS = frozenset("gmshlL")
_UNIT_ALIASES = {
    "usd": "dollar", "buck": "dollar", "deg": "degree", "meter": "m", "metre": "m",
    "centimeter": "cm", "centimetre": "cm", "kilometer": "km", "kilometre": "km",
    "millimeter": "mm", "millimetre": "mm", "inch": "in", "foot": "ft", "feet": "ft",
    "mile": "mi", "gram": "g", "kilogram": "kg", "pound": "lb", "hour": "h", "hr": "h",
    "minute": "min", "second": "s", "sec": "s", "liter": "l", "litre": "l",
    "milliliter": "ml", "millilitre": "ml",
}
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_BARE_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_FRACTION = re.compile(r"(-?)(?:\\frac\{(-?\d+)\}\{(-?\d+)\}|\\frac(\d)(\d)|(\d+)/(\d+))")
_FLOAT_ROUNDING = 6  # math-verify's default: 1/3 equals 0.333333 but not 0.333


def _unwrap(s: str) -> str:
    """Delimiters, a whole-string \\boxed{} and \\text{} wrappers off."""
    s = _strip_delims(s)
    boxed = _boxed_all(s)
    if len(boxed) == 1 and s.startswith(("\\boxed", "\\fbox")) and s.endswith("}"):
        s = boxed[0]
    return _TEXT_WRAP.sub(r"\1", s).strip()


def _unit_name(words: str) -> str:
    """A canonical unit: lower case, singular, common abbreviations merged."""
    out = []
    for w in words.lower().replace(".", " ").split():
        if len(w) > 3 and w.endswith(("ches", "shes", "xes", "sses")):
            w = w[:-2]
        elif len(w) > 2 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(_UNIT_ALIASES.get(w, w))
    return " ".join(out)


def _split_unit(s: str) -> tuple[str, str | None]:
    """"5 kg" -> ("5", "kg"). Only a single quantity (no letters outside LaTeX commands,
    no + or =) takes a unit, so "x^2 + 2g", "3 + 2i" and "\\log 8" stay whole."""
    m = _UNIT_TAIL.match(s)
    if not m:
        return s, None
    core, unit = m.group("core").strip(), m.group("unit").strip()
    if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", core)) or re.search(r"[+=<>]|\\pm", core):
        return s, None
    if len(unit) == 1 and unit not in _SINGLE_LETTER_UNITS:
        return s, None
    return core, _unit_name(unit)


def _parts(ans: str) -> _Parts:
    """Split an answer into its math, its unit and its percent sign."""
    s = _unwrap(str(ans))
    s = _THIN_SPACES.sub("", s).replace("{,}", ",")
    s = _WIDE_SPACES.sub(" ", s).replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").strip().rstrip(".").strip()
    unit = None
    s, degrees = _DEGREES.subn("", s)
    if degrees:
        unit = "degree"
    s, dollars = _CURRENCY.subn("", s)
    if dollars:
        unit = "dollar"
    s, pct = _PERCENT.subn("", s)
    if unit is None:
        s, unit = _split_unit(s)
    s = s.strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return _Parts(_BARE_PI.sub(r"\\pi", s), unit, bool(pct))


def normalize(ans: str) -> str:
    """A cheap canonical form: no spaces, delimiters, wrappers, thousands separators or
    units (trailing words, degrees, a dollar sign); a percent keeps its sign."""
    p = _parts(ans)
    return "".join(p.core.split()) + ("%" if p.pct else "")


def _number(core: str) -> tuple[Fraction, bool] | None:
    """A plain number or numeric fraction, exactly, and whether it was written as a
    decimal (then compared to math-verify's rounding)."""
    s = "".join(core.split())
    if _PLAIN_NUMBER.fullmatch(s):
        return Fraction(s), "." in s
    m = _FRACTION.fullmatch(s)
    if m:
        pair = next(g for g in (m.group(2, 3), m.group(4, 5), m.group(6, 7)) if g[0])
        num, den = int(pair[0]), int(pair[1])
        if den:
            return Fraction(num, den) * (-1 if m.group(1) else 1), False
    return None


def _numbers_equal(a: _Parts, b: _Parts) -> bool | None:
    """The verdict for two plain numbers, None when either is not one. A percent matches
    its value or its fraction (50% is 50 and 0.5), as in math-verify."""
    x, y = _number(a.core), _number(b.core)
    if x is None or y is None:
        return None
    decimal = x[1] or y[1]
    xs = {x[0], x[0] / 100} if a.pct else {x[0]}
    ys = {y[0], y[0] / 100} if b.pct else {y[0]}
    if decimal:
        xs = {round(v, _FLOAT_ROUNDING) for v in xs}
        ys = {round(v, _FLOAT_ROUNDING) for v in ys}
    return bool(xs & ys)


def equivalent(a: str, b: str) -> bool:
    """True when two final answers mean the same value."""
    try:
        if a is None or b is None:
            return False
        key = (str(a), str(b)) if str(a) <= str(b) else (str(b), str(a))
        verdict = _VERDICTS.get(key)
        if verdict is None:
            verdict = _equivalent(*key)
            # No verdict (no worker, past the limit, a crash): a guess, answered but not
            # remembered, so that a slow moment does not mark the pair wrong for good.
            if verdict is None:
                return False
            if len(_VERDICTS) >= 8192:
                _VERDICTS.clear()
            _VERDICTS[key] = verdict
        return verdict
    except Exception:
        return False


_VERDICTS: dict[tuple[str, str], bool] = {}


def _equivalent(a: str, b: str) -> bool | None:
    pa, pb = _parts(a), _parts(b)
    if not pa.core or not pb.core:
        return False
    if pa.unit and pb.unit and pa.unit != pb.unit:  # 5 kg is not 5 g
        return False
    if "".join(pa.core.split()) == "".join(pb.core.split()):
        return True
    numeric = _numbers_equal(pa, pb)
    if numeric is not None:
        return numeric
    out = _WORKER.call("equal", _for_sympy(pa), _for_sympy(pb))
    return out if isinstance(out, bool) else None


def _for_sympy(p: _Parts) -> str:
    return p.core + ("\\%" if p.pct else "")


# --- the worker ---------------------------------------------------------------------

_START_LIMIT_S = 60.0  # python + sympy import, on a busy machine
_INNER_LIMIT_S = 3  # math-verify's own limit inside the worker, per parse or verify
_INNER_STEPS = 4  # the most limited steps in one request: _serve_equal's 2 parses + 2 verifies
_CALL_MARGIN_S = 8.0  # the unlimited rest (JSON, the size guard, printing LaTeX), under load
# One extraction or comparison. Above the inner limits' sum, so that math-verify's own
# limits end a slow request (an answer) before this one kills the worker (a restart).
_CALL_LIMIT_S = _INNER_STEPS * _INNER_LIMIT_S + _CALL_MARGIN_S
_MAX_FAILED_STARTS = 3  # then extraction and equivalence go on without math-verify
_NOT_STARTED = object()
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# -P: the cwd is not put first on the worker's sys.path, so a tts_tui/ or sympy.py there
# cannot shadow the real one; _ROOT on PYTHONPATH (and site-packages) finds this package.
_WORKER_ARGV = ("-P", "-c", "from tts_tui.verify.answers import _serve; _serve()")
# A forked child's copies of a parent worker's pipe objects: kept, never finalized (see
# _release_in_child).
_ORPHANED: list[Any] = []


class _Worker:
    """One math-verify subprocess shared by all threads, one request at a time. A
    request past its limit kills the process; the next request starts a new one.
    Requests carry ids, and a reply to another id (a request given up on) is dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._fds: tuple[int, ...] = ()  # the pipes, as numbers: a forked child uses only these
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._next_id = 0
        self._unavailable = False  # math-verify is not installed: stop trying
        self._failed_starts = 0
        atexit.register(self.close)
        if hasattr(os, "register_at_fork"):  # a forked child must not talk to our worker
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child: drop the parent's worker, without signalling it, and let go
        of its pipes so that the worker still sees its input end when the parent dies."""
        self._lock = threading.Lock()
        self._lines = queue.Queue()  # the parent's pump may have held its lock
        proc, fds, self._proc, self._fds = self._proc, self._fds, None, ()
        if proc is not None:
            _release_in_child(proc, fds)

    def call(self, op: str, *args: Any, limit: float | None = None) -> Any:
        """The worker's answer; None on a timeout or an error; _NOT_STARTED when no
        worker could be started."""
        with self._lock:
            try:
                if not self._ensure_started():
                    return _NOT_STARTED
                return self._request(op, args, _CALL_LIMIT_S if limit is None else limit)
            except BaseException:
                # An interrupt (Ctrl-C) mid-request leaves its answer on the way: a new
                # worker is the sure way to keep requests and answers in step.
                self._kill()
                raise

    def _request(self, op: str, args: tuple[Any, ...], limit: float) -> Any:
        assert self._proc is not None and self._proc.stdin is not None
        deadline = time.monotonic() + limit
        self._next_id += 1
        try:
            self._proc.stdin.write(json.dumps([self._next_id, op, *args]) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the worker died
            self._kill()
            return None
        return self._reply(self._next_id, deadline)

    def _reply(self, rid: int, deadline: float) -> Any:
        """The answer to request rid, skipping any other line; None (the worker killed)
        past the deadline or when the worker died."""
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self._kill()
                return None
            try:
                got = json.loads(line)
            except ValueError:
                continue
            if isinstance(got, list) and len(got) == 2 and type(got[0]) is int and got[0] == rid:
                return got[1]

    def _ensure_started(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return True
        self._kill()
        if self._unavailable:
            return False
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, *_WORKER_ARGV],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, encoding="utf-8", env=env,
            )
        except OSError:
            self._unavailable = True
            return False
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._fds = (self._proc.stdin.fileno(), self._proc.stdout.fileno())
        self._lines = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        try:
            hello = self._lines.get(timeout=_START_LIMIT_S)
        except queue.Empty:
            hello = None
        if hello != "ready":
            self._failed_starts += 1
            self._unavailable = hello == "no math-verify" or self._failed_starts >= _MAX_FAILED_STARTS
            self._kill()
            return False
        self._failed_starts = 0
        return True

    def _kill(self) -> None:
        proc, self._proc, self._fds = self._proc, None, ()
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except Exception:
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream:
                    stream.close()
            except Exception:
                pass

    def close(self) -> None:
        """End the worker (at exit): closing its input ends it; a hung one is killed."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=1)
        except Exception:
            pass
        self._kill()


def _release_in_child(proc: subprocess.Popen[str], fds: tuple[int, ...]) -> None:
    """Close a forked child's ends of the parent worker's pipes, by pointing their
    descriptors at /dev/null. Not stream.close(): that would flush a half-written request
    into the parent's worker, or wait forever on a buffer lock that a parent thread (the
    pump, blocked in a read) held at the fork. The stream objects are kept, never
    finalized, for the same reason; their descriptors now hold nothing."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    try:
        for fd in fds:
            try:
                os.dup2(devnull, fd, inheritable=False)
            except OSError:
                pass
    finally:
        os.close(devnull)
    _ORPHANED.append(proc)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Move the worker's output lines to a queue, so a read can time out."""
    try:
        for line in stream:
            lines.put(line.rstrip("\n"))
    except (OSError, ValueError):
        pass
    lines.put(None)


_WORKER = _Worker()


# --- inside the worker process ------------------------------------------------------


def _serve() -> None:
    """The worker's loop: one JSON request [id, op, *args] per input line, one JSON
    answer [id, result] per line."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    try:
        import math_verify  # noqa: F401
    except ImportError:
        print("no math-verify", file=out, flush=True)
        return
    print("ready", file=out, flush=True)
    ops = {"extract": _serve_extract, "equal": _serve_equal}
    for line in sys.stdin:
        rid, result = None, None
        try:
            rid, op, *args = json.loads(line)
            result = ops[op](*args)
        except Exception:
            pass
        print(json.dumps([rid, result]), file=out, flush=True)  # the id: see _Worker._reply


def _inner_limit() -> int | None:
    """math-verify's own limit needs SIGALRM (the worker runs it in its main thread)."""
    return _INNER_LIMIT_S if hasattr(signal, "SIGALRM") else None


def _extraction_configs(anchored: bool) -> list[Any]:
    """LaTeX (boxed first) and, without an anchor, plain expressions too. Unit removal is
    off: math-verify's strips letters inside expressions ("x^2 + 2g" -> "x^2 + 2")."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    norm = NormalizationConfig(
        basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
    )
    latex = LatexExtractionConfig(
        try_extract_without_anchor=not anchored, boxed_match_priority=0, normalization_config=norm
    )
    return [latex] if anchored else [latex, ExprExtractionConfig()]


def _is_percent(expr: Any) -> bool:
    """latex2sympy writes "28%" as 28 * UnevaluatedExpr(1/100)."""
    from sympy import Mul, Rational, UnevaluatedExpr

    return isinstance(expr, Mul) and len(expr.args) == 2 and expr.args[1] == UnevaluatedExpr(Rational(1, 100))


def _serve_extract(text: str, anchored: bool) -> str | None:
    """The string math-verify extracts, re-parseable as LaTeX; a percent keeps its sign."""
    from math_verify import parse

    found = parse(text, extraction_config=_extraction_configs(anchored), parsing_timeout=_inner_limit())
    if len(found) < 2 or not isinstance(found[1], str):
        return None
    expr, s = found[0], found[1].strip()
    if not _parse_answer(s):  # the string belongs to another candidate than the value
        from sympy import latex

        s = latex(expr)
    if _is_percent(expr) and "%" not in s:
        s += "\\%"
    return s or None


def _parse_answer(s: str) -> list[Any]:
    from math_verify import parse

    flat = " ".join(s.split())
    found = parse(f"${flat}$", extraction_config=_extraction_configs(False)[:1], parsing_timeout=_inner_limit())
    return found if found and not isinstance(found[0], str) else []


def _serve_equal(a: str, b: str) -> bool | None:
    """math-verify's verdict in either direction (gold and prediction alike); None when
    its own time limit ran out, so the parent does not remember a verdict it never got."""
    from math_verify import verify

    t0 = time.monotonic()
    pa, pb = _parse_answer(a), _parse_answer(b)
    if not pa or not pb:
        return None if _ran_out(t0) else False
    if _too_big(pa[0]) or _too_big(pb[0]):  # 9^{9^{9^9}}: sympy would not come back
        return bool(pa[0] == pb[0])
    limit = _inner_limit()
    for x, y in ((pa, pb), (pb, pa)):
        t0 = time.monotonic()
        if verify(x, y, timeout_seconds=limit):
            return True
        if _ran_out(t0):  # math-verify swallows its timeout and answers False
            return None
    return False


def _ran_out(t0: float) -> bool:
    """Did a math-verify call that started at `t0` reach its own time limit?"""
    limit = _inner_limit()
    return limit is not None and time.monotonic() - t0 >= 0.9 * limit


def _too_big(expr: Any) -> bool:
    """Whether evaluating expr means a number of more than a million digits (a power
    tower) or a factorial past 10^5."""
    from sympy import Basic, Pow, factorial, preorder_traversal

    if not isinstance(expr, Basic):
        return False
    for node in preorder_traversal(expr):
        if isinstance(node, Pow) and _log10_size(node) > 1e6:
            return True
        if isinstance(node, factorial) and node.args[0].is_Number and abs(node.args[0]) > 10**5:
            return True
    return False


def _log10_size(node: Any) -> float:
    """A rough upper bound on log10 of |node| for numbers and powers of numbers; 0 for
    anything else (symbols), which the guard leaves alone."""
    try:
        if node.is_Integer:
            return math.log10(abs(int(node))) if node != 0 else 0.0
        if node.is_Rational:
            return abs(math.log10(abs(node.p))) + abs(math.log10(abs(node.q)))
        if node.is_Number or node.is_NumberSymbol:
            return abs(math.log10(abs(float(node)))) if node != 0 else 0.0
        if node.is_Pow:
            exp_size = _log10_size(node.exp)
            if exp_size > 300:
                return math.inf
            return 10**exp_size * max(_log10_size(node.base), 1e-3)
        if node.is_Mul:
            return sum(_log10_size(arg) for arg in node.args)
        if node.is_Add:
            return max((_log10_size(arg) for arg in node.args), default=0.0) + 1
    except (ValueError, OverflowError, TypeError):
        return math.inf
    return 0.0


class MathAnswers:
    """The search layer's `Answers` protocol, backed by the functions above."""

    def extract(self, text: str) -> str | None:
        return extract_answer(text)

    def equivalent(self, a: str, b: str) -> bool:
        return equivalent(a, b)
