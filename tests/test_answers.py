"""Answer extraction and equivalence: a corpus of tricky pairs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from tts_tui.verify import answers
from tts_tui.verify.answers import equivalent, extract_answer

SAME = [
    ("\\frac{1}{2}", "1/2"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "\\frac34"),
    ("30^\\circ", "30"),
    ("30^{\\circ}", "30°"),
    ("\\$18", "18"),
    ("18 dollars", "18"),
    ("\\text{18 apples}", "18"),
    ("50\\%", "50"),
    ("1,450,000", "1450000"),
    ("-7", "-7.0"),
    ("(1, 2]", "(1,2]"),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),
    ("(3, -4)", "(3,-4)"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("x = 5", "5"),
]
DIFFERENT = [
    ("-3", "3"),
    ("(1,2)", "(2,1)"),
    ("[1,2]", "(1,2)"),
    ("\\frac{1}{3}", "0.33"),
    ("42", "24"),
    ("2\\pi", "2"),
]


@pytest.mark.parametrize("a,b", SAME)
def test_equivalent(a, b):
    assert equivalent(a, b)
    assert equivalent(b, a)


@pytest.mark.parametrize("a,b", DIFFERENT)
def test_not_equivalent(a, b):
    assert not equivalent(a, b)


@pytest.mark.parametrize(
    "text,answer",
    [
        ("so the result is \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}"),
        ("first \\boxed{3} then corrected: \\boxed{5}", "5"),
        ("nested \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
        ("The answer is 42.", "42"),
        # prose after the number is not part of the answer (seen in a revise run on test/10)
        ("The final answer is 366 downloads over the three months.", "366"),
        ("So the answer is 1,200 dollars in total.", "1200"),
        ("The answer is 25% of the class.", "25%"),
        ("The answer is $18 per day.", "18"),
        ("Final Answer: 2 \\sin b \\cos a", "2 \\sin b \\cos a"),
        ("The answer is odd.", "odd"),
        # a revision's verdict is not its answer (seen in a revise run on test/18)
        ("The final answer is correct: Claire will eat 7 dozens of eggs in 4 weeks.", "7"),
        ("Total: 12 eggs. The final answer is correct.", "12"),
        ("The answer is approximately 14.67 liters.", "14.67"),
        # the words in front of a tuple are not part of it
        ("The answer is the pair (2, 3).", "(2, 3)"),
        ("The answer is pi/2.", "pi/2"),
        ("Final Answer: $-\\frac{2}{3}$", "-\\frac{2}{3}"),
        # math-verify's number extraction drops the thousands separator
        ("She pays 3 + 4 = 7 dollars, then 1,200 more", "1200"),
        ("no numbers here", None),
        ("", None),
        # LaTeX in a solution is read whole, not as its last number
        ("So she keeps $\\frac{1}{3}$ of the cake.", "\\frac{1}{3}"),
        ("The answer is $\\frac{1}{3}$ of the cake.", "\\frac{1}{3}"),
        ("The answer is \\(x \\leq 2\\).", "x \\leq 2"),
        # a gold answer is taken whole
        ("x \\leq 2", "x \\leq 2"),
        ("$\\frac{1}{3}$", "\\frac{1}{3}"),
        ("[-2, 7)", "[-2, 7)"),
        ("(3, -1)", "(3, -1)"),
        ("\\begin{pmatrix} 7 \\\\ 8 \\\\ 11 \\end{pmatrix}", "\\begin{pmatrix} 7 \\\\ 8 \\\\ 11 \\end{pmatrix}"),
        ("x^2 + 2g", "x^2 + 2g"),
        ("\\log 8", "\\log 8"),
        # a one-line computation or GSM8K's answer line is not an answer taken whole
        ("3 + 4 = 7 dollars", "7"),
        ("#### 72", "72"),
    ],
)
def test_extract(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("junk", ["\\boxed{", "}}}{{{", "\\frac{", "$$$", "\x00\xff", "9" * 5000, "\\boxed{\\sqrt{}}"])
def test_never_raises(junk):
    extract_answer(junk)
    equivalent(junk, junk + "1")
    equivalent(junk, "1")


# --- the corpus: (solution text or answer, gold answer, expected verdict) ---------------
# verdict = equivalent(extract_answer(text), gold), as evaluate.py scores a sample.

CORPUS = [
    # fractions
    ("So the probability is $\\frac{1}{3}$.", "\\frac{1}{3}", True),
    ("$\\frac{1}{3}$", "1/3", True),
    ("$\\frac{1}{3}$", "3", False),
    ("\\frac{1}{3}", "0.333", False),
    ("\\frac{1}{3}", "0.333333", True),  # math-verify compares decimals to six places
    ("\\dfrac{7}{12}", "\\frac{7}{12}", True),
    ("\\frac58", "0.625", True),
    ("The answer is $-\\frac{2}{3}$.", "-\\frac{2}{3}", True),
    ("-\\frac{2}{3}", "\\frac{2}{3}", False),
    ("\\frac{9}{26}", "\\frac{26}{9}", False),
    ("3/4", "\\frac{6}{8}", True),
    ("\\frac{1}{2}", "0.5", True),
    # inequalities
    ("x \\leq 2", "x \\le 2", True),
    ("$x \\leq 2$", "2", False),
    ("x \\leq 2", "(-\\infty, 2]", True),
    ("x < 2", "x \\leq 2", False),
    ("x \\geq -1", "[-1, \\infty)", True),
    ("The solution set is $x > 3$.", "x > 3", True),
    # intervals
    ("[-2, 7)", "[-2,7)", True),
    ("[-2, 7)", "[-2, 7]", False),
    ("(0, \\infty)", "(0,\\infty)", True),
    ("(0, \\infty)", "[0, \\infty)", False),
    ("(-\\infty, 2]", "(-\\infty, 2)", False),
    ("So $x \\in (1, 5)$.", "(1,5)", True),
    ("[1,2]", "(1,2)", False),
    ("(-\\infty,-3)\\cup(3,\\infty)", "(-\\infty, -3) \\cup (3, \\infty)", True),
    ("(-\\infty,-3)\\cup(3,\\infty)", "(-3,3)", False),
    # matrices and vectors
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", False),
    ("The vector is $\\begin{pmatrix} 7 \\\\ 8 \\\\ 11 \\end{pmatrix}$.",
     "\\begin{pmatrix} 7 \\\\ 8 \\\\ 11 \\end{pmatrix}", True),
    ("\\begin{pmatrix} -1 & -5 \\\\ 1 & 4 \\end{pmatrix}", "\\begin{pmatrix} -1 & -5 \\\\ 1 & 4 \\end{pmatrix}", True),
    ("\\begin{pmatrix} -1 & -5 \\\\ 1 & 4 \\end{pmatrix}", "\\begin{pmatrix} -1 & 1 \\\\ -5 & 4 \\end{pmatrix}", False),
    ("\\begin{pmatrix} 1/2 \\\\ 0.5 \\end{pmatrix}", "\\begin{pmatrix} \\frac12 \\\\ \\frac12 \\end{pmatrix}", True),
    # tuples and points
    ("(3, -1)", "(3,-1)", True),
    ("(3, -1)", "(-1, 3)", False),
    ("The intersection point is $(10, 8, 6)$.", "(10,8,6)", True),
    ("The answer is the pair (2, 3).", "(2,3)", True),
    ("(3, -1)", "3", False),
    ("\\left( 3, \\frac{1}{2} \\right)", "(3, 0.5)", True),
    # thousands separators and decimal commas
    ("1,000", "1000", True),
    ("1,450,000", "1450000", True),
    ("The total is 1,000 dollars.", "1000", True),
    ("3,5", "3.5", False),  # a gold "3,5" lists two solutions
    ("3,5", "5,3", True),
    ("1,000", "1", False),
    ("12,000.5", "12000.5", True),
    ("1{,}000", "1000", True),
    # percent
    ("28 percent", "28", True),
    ("28\\%", "28", True),
    ("The answer is 28 percent.", "28\\%", True),
    ("78\\%", "0.78", True),
    ("28 percent", "82", False),
    ("25%", "25", True),
    ("25%", "2.5", False),
    # units, as whole trailing words
    ("5 kg", "5 g", False),
    ("5 kg", "5", True),
    ("5 kg", "6 kg", False),
    ("\\$18", "18", True),
    ("18 dollars", "18", True),
    ("\\$18", "18 dollars", True),
    ("18 \\text{ cm}", "18", True),
    ("12 inches", "12 in", True),
    ("12 feet", "12 inches", False),
    ("10 m", "10 min", False),
    ("\\text{18 apples}", "18", True),
    ("The answer is 366 downloads over the three months.", "366", True),
    # logarithms and letters inside expressions
    ("\\log 8", "3\\log 2", True),
    ("\\log_2 8", "3", True),
    ("\\ln 8", "\\log 8", False),
    ("x^2 + 2g", "x^2+2g", True),
    ("x^2 + 2g", "x^2 + 2", False),
    ("x^2 + 2g", "2g + x^2", True),
    # sets
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", True),
    ("\\{1, 2\\}", "\\{1, 2, 3\\}", False),
    ("The solutions are $x = 2$ and $x = 3$.", "2, 3", True),
    # roots
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True),
    ("\\sqrt{2}", "1.414", False),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("\\sqrt{8}", "4\\sqrt{2}", False),
    # degrees
    ("75^\\circ", "75", True),
    ("75^{\\circ}", "75°", True),
    ("75 degrees", "75^\\circ", True),
    ("75^\\circ", "57", False),
    # expressions
    ("2x + 3", "3 + 2x", True),
    ("(x-1)(x+1)", "x^2 - 1", True),
    ("x^2 - 1", "x^2 + 1", False),
    ("y = 2x + 3", "y=3+2x", True),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("2\\pi", "2", False),
    ("The answer is pi/2.", "\\frac{\\pi}{2}", True),
    ("\\frac{\\pi}{2}", "90^\\circ", False),
    ("10^{10}", "10000000000", True),
    ("5!", "120", True),
    ("\\binom{5}{2}", "10", True),
    ("2^{2^{2^2}}", "65536", True),
    # whole solutions
    ("Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", "72", True),
    ("She makes 9 * 2 = $18 every day.\nThe answer is 18.", "18", True),
    ("The final answer is correct: Claire will eat 7 dozens of eggs in 4 weeks.", "7", True),
    ("Total: 12 eggs. The final answer is correct.", "12", True),
    ("Adding up, we get $\\boxed{\\frac{9}{26}}$.", "\\frac{9}{26}", True),
    ("first \\boxed{3} then corrected: \\boxed{5}", "3", False),
    ("So the answer is 1,200 dollars in total.", "1200", True),
    ("The answer is approximately 14.67 liters.", "14.67", True),
    ("She pays 3 + 4 = 7 dollars, then 1,200 more", "7", False),
    ("The area is $\\frac{25}{2}$ square units.", "\\frac{25}{2}", True),
    ("Final Answer: The final answer is $\\frac{1}{64}$. I hope it is correct.", "\\frac{1}{64}", True),
    ("We find $x = 5$.", "5", True),
    ("Therefore $a = 3$, so $a^2 = 9$.", "9", True),
    ("Final Answer: 2 \\sin b \\cos a", "2 \\sin b \\cos a", True),
    ("The answer is odd.", "\\text{odd}", True),
    ("The answer is odd.", "\\text{even}", False),
    # false positives
    ("0.5", "5", False),
    ("-3", "3", False),
    ("42", "24", False),
    ("1/3", "3", False),
    ("2", "x \\leq 2", False),
    ("(1,2)", "[1,2]", False),
    ("\\frac{1}{3}", "0.33", False),
    ("100", "1000", False),
    ("3.14", "\\pi", False),
    ("9^{9^{9^9}}", "1", False),
]


def _verdict(text: str, gold: str) -> bool:
    got = extract_answer(text)
    return got is not None and equivalent(got, gold)


def test_corpus_agreement():
    wrong = [(t, g, want, extract_answer(t)) for t, g, want in CORPUS if _verdict(t, g) != want]
    rate = 1 - len(wrong) / len(CORPUS)
    assert len(CORPUS) >= 80
    assert rate >= 0.95, f"{rate:.1%} agreement; disagreements (text, gold, expected, extracted): {wrong}"


# --- the named bugs of issue 15 -----------------------------------------------------


def test_fraction_is_not_its_denominator():
    assert extract_answer("$\\frac{1}{3}$") == "\\frac{1}{3}"
    assert not equivalent(extract_answer("So the share is $\\frac{1}{3}$."), "3")


def test_inequality_is_not_its_bound():
    assert equivalent(extract_answer("x \\leq 2"), "x \\le 2")
    assert not equivalent(extract_answer("x \\leq 2"), "2")


def test_structures_are_read_whole():
    assert equivalent(extract_answer("[-2, 7)"), "[-2,7)")
    assert not equivalent(extract_answer("[-2, 7)"), "7")
    assert equivalent(extract_answer("$(0, \\infty)$"), "(0,\\infty)")
    assert equivalent(extract_answer("\\begin{pmatrix}1\\\\2\\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}")
    assert not equivalent(extract_answer("(3, -1)"), "-1")


def test_separators_and_percent_words():
    assert equivalent("1,000", "1000")
    assert not equivalent("3,5", "3.5")
    assert equivalent(extract_answer("28 percent"), "28")
    assert equivalent(extract_answer("28 percent"), "28\\%")


def test_units_are_whole_trailing_words():
    assert not equivalent("5 kg", "5 g")
    assert equivalent("18 dollars", "18")
    assert not equivalent("x^2 + 2g", "x^2 + 2")
    assert answers.normalize("x^2 + 2g") == "x^2+2g"
    assert answers.normalize("\\log 8") == "\\log8"
    assert answers.normalize("5 kg") == "5"


def test_tower_is_bounded_in_a_thread():
    out: dict[str, object] = {}

    def run():
        start = time.monotonic()
        out["verdict"] = equivalent("9^{9^{9^9}}", "1")
        out["seconds"] = time.monotonic() - start

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "equivalent did not return within 30 s"
    assert out["verdict"] is False
    assert out["seconds"] < 30


def test_call_past_its_limit_kills_and_restarts_the_worker():
    assert answers._WORKER.call("equal", "x^2 - 4", "(x-2)(x+2)", limit=0.0001) is None
    assert answers._WORKER._proc is None  # killed
    assert equivalent("x^2 - 9", "(x-3)(x+3)")  # a fresh worker answers
    assert not equivalent("x^2 - 9", "(x-3)^2")


def test_threads_share_the_worker():
    pairs = [("(x+%d)^2" % i, "x^2 + %dx + %d" % (2 * i, i * i)) for i in range(1, 7)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda p=p: results.append(equivalent(*p))) for p in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [True] * len(pairs)


def test_worker_ends_with_its_process():
    code = (
        "from tts_tui.verify.answers import equivalent, _WORKER\n"
        "assert equivalent('x^2-1', '(x-1)(x+1)')\n"
        "print(_WORKER._proc.pid)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"worker {pid} outlived its parent")


# --- the worker's failure modes -----------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether pid runs; a zombie (an orphan that no init has reaped yet) does not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_no_verdict_is_not_remembered(monkeypatch):
    pair = ("(x+11)^2", "x^2 + 22x + 121")
    answers._VERDICTS.clear()
    monkeypatch.setattr(answers, "_CALL_LIMIT_S", 1e-4)  # a slow moment: the call times out
    assert not equivalent(*pair)
    assert not answers._VERDICTS
    monkeypatch.undo()
    assert equivalent(*pair)  # tried again, not the remembered timeout


def test_dead_worker_is_not_remembered(monkeypatch):
    pair = ("(x+12)^2", "x^2 + 24x + 144")
    answers._VERDICTS.clear()
    monkeypatch.setattr(answers._WORKER, "call", lambda *args, **kwargs: None)
    assert not equivalent(*pair)
    assert not answers._VERDICTS
    monkeypatch.undo()
    assert equivalent(*pair)


def test_outer_limit_exceeds_the_inner_limits():
    # _serve_equal parses twice and verifies twice, each under math-verify's own limit: a
    # comparison that math-verify finishes must not be killed from outside first.
    assert answers._CALL_LIMIT_S >= 4 * answers._INNER_LIMIT_S + 5


def test_stale_reply_is_dropped():
    w = answers._WORKER
    assert w.call("equal", "x^2", "x^2") is True  # a worker is up
    w._lines.put("true")  # replies to requests that nobody waits for any more
    w._lines.put('[-1, true]')
    assert w.call("equal", "x^2", "x^3") is False
    assert w.call("equal", "x^3", "x^3") is True


class _InterruptOnce:
    """A worker's queue whose first read is interrupted, as by Ctrl-C."""

    def __init__(self, lines):
        self._lines, self._done = lines, False

    def get(self, *args, **kwargs):
        if not self._done:
            self._done = True
            raise KeyboardInterrupt
        return self._lines.get(*args, **kwargs)

    def put(self, item):
        self._lines.put(item)


def test_interrupt_mid_call_kills_the_worker():
    w = answers._WORKER
    assert w.call("equal", "x^2", "x^2") is True
    w._lines = _InterruptOnce(w._lines)  # the next start replaces it
    with pytest.raises(KeyboardInterrupt):
        w.call("equal", "x^2 - 1", "(x-1)(x+1)")  # True, answered after the interrupt
    assert w._proc is None  # killed, with that answer on its way
    assert w.call("equal", "x^2", "x^3") is False  # not the previous request's True


def test_cwd_does_not_shadow_the_worker_imports(tmp_path):
    (tmp_path / "sympy.py").write_text("raise ImportError('a sympy.py in the cwd')\n")
    (tmp_path / "tts_tui").mkdir()
    (tmp_path / "tts_tui" / "__init__.py").write_text("raise ImportError('a tts_tui/ in the cwd')\n")
    code = (
        "from tts_tui.verify.answers import equivalent, _WORKER\n"
        "assert equivalent('x^2-1', '(x-1)(x+1)'), 'no worker'\n"
        "assert _WORKER._proc is not None\n"
    )
    # -P for this parent too, which finds the installed package from another cwd
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_forked_child_lets_go_of_the_worker():
    code = (
        "import os, time\n"
        "from tts_tui.verify.answers import equivalent, _WORKER\n"
        "assert equivalent('x^2-1', '(x-1)(x+1)')\n"
        "proc = _WORKER._proc  # a reference: the child must not count on finalizing the pipes\n"
        "worker = proc.pid\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    null = os.open(os.devnull, os.O_RDWR)\n"
        "    os.dup2(null, 1), os.dup2(null, 2)  # so that subprocess.run need not wait for it\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "assert equivalent('x^2-4', '(x-2)(x+2)'), 'the child disturbed the worker'\n"
        "print(worker, child, flush=True)\n"
        "os._exit(0)  # no atexit hook: the worker ends when its input closes\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    worker, child = map(int, proc.stdout.split())
    try:
        assert _wait_gone(worker, 10), f"worker {worker} lives on while the forked child {child} does"
    finally:
        for pid in (child, worker):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
