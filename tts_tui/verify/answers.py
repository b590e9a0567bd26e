"""Final-answer extraction and mathematical equivalence (math-verify, sympy-backed).

Both never raise, whatever the input string.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUM_RE = re.compile(_NUM)
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*$|\.\s+|\n|$)", re.I)
_FINAL = re.compile(r"final answer(?:\s+is)?[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*$|\n|$)", re.I)
# "366 downloads over the three months": a number, then words that are not LaTeX.
_NUM_THEN_PROSE = re.compile(rf"^\\?\$?\s*({_NUM})\s*(%|\\%)?\s+(?:[A-Za-z]{{2,}}\b.*)$", re.S)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]")
# "The final answer is correct: Claire will eat 7 dozens...": a verdict, not an answer.
_VERDICT = re.compile(r"^(?:correct|incorrect|wrong|as follows)\b[\s:,.]*", re.I)
# A sentence rather than a math expression: starts with a word, no LaTeX or structure.
_SENTENCE = re.compile(r"^[A-Za-z]{2,}\s[^\\()\[\]{}=]*$")
_TIMEOUT_S = 3


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
    """The final answer in a solution: last \\boxed{}, "The answer is", "Final Answer:",
    else the last number; None if there is nothing."""
    try:
        if not isinstance(text, str) or not text.strip():
            return None
        boxed = [b for b in _boxed_all(text) if b]
        if boxed:
            return boxed[-1]
        for rx in (_FINAL, _ANSWER_IS):
            hits = rx.findall(text)
            if hits:
                ans = _from_phrase(hits[-1])
                if ans:
                    return ans
        nums = _NUM_RE.findall(text)
        return nums[-1].rstrip(".") if nums else None
    except Exception:
        return None


def _from_phrase(phrase: str) -> str:
    """The answer in what follows "answer is": the leading number when prose follows
    it ("366 downloads over the three months"), the first number of a sentence, else
    the phrase itself; "" when it is only a verdict ("correct.")."""
    ans = _VERDICT.sub("", phrase.strip()).rstrip(".").strip()
    m = _NUM_THEN_PROSE.match(ans)
    if m and not _LATEX_COMMAND.search(ans):  # keep LaTeX such as "2 \sin b"
        return m.group(1).replace(",", "") + ("%" if m.group(2) else "")
    if _SENTENCE.match(ans):  # "she will eat 7 dozens in 4 weeks": its first number
        first = _NUM_RE.search(ans)
        if first:
            return first.group(0).replace(",", "")
    return ans


_TEXT_WRAP = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")
_UNITS = re.compile(
    r"\s*(?:dollars?|cents?|units?|degrees?|meters?|cm|km|inches|feet|hours?|minutes?|days?|years?|miles?|people|"
    r"students?|apples?|pounds?|kg|g|mph|percent)\b\.?$",
    re.I,
)


def normalize(ans: str) -> str:
    """A cheap canonical form that settles most GSM8K-style comparisons without sympy."""
    s = ans.strip().strip("$").strip()
    s = _TEXT_WRAP.sub(r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\ ", " ").replace("\\$", "")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "").replace("\\%", "%")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = _UNITS.sub("", s).strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = s.rstrip(".").strip()
    return "".join(s.split())


def _as_number(s: str) -> float | None:
    t = s.rstrip("%")
    try:
        return float(t)
    except ValueError:
        m = re.fullmatch(r"\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+)", t)
        if m:
            a, b = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            return int(a) / int(b) if int(b) else None
    return None


def equivalent(a: str, b: str) -> bool:
    """True when two final answers mean the same value."""
    try:
        if a is None or b is None:
            return False
        na, nb = normalize(str(a)), normalize(str(b))
        if not na or not nb:
            return False
        if na == nb:
            return True
        x, y = _as_number(na), _as_number(nb)
        if x is not None and y is not None:
            return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))
        return _math_verify(na, nb)
    except Exception:
        return False


@lru_cache(maxsize=4096)
def _math_verify(a: str, b: str) -> bool:
    from math_verify import parse, verify

    # math-verify's time limit uses SIGALRM, which only the main thread may set.
    timeout = _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        ga = parse(f"${a}$", parsing_timeout=timeout)
        gb = parse(f"${b}$", parsing_timeout=timeout)
        if not ga or not gb:
            return False
        return bool(verify(ga, gb, timeout_seconds=timeout)) or bool(verify(gb, ga, timeout_seconds=timeout))
    except Exception:
        return False


class MathAnswers:
    """The search layer's `Answers` protocol, backed by the functions above."""

    def extract(self, text: str) -> str | None:
        return extract_answer(text)

    def equivalent(self, a: str, b: str) -> bool:
        return equivalent(a, b)
