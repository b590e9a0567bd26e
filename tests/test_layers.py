"""The core never imports textual or rich."""

import subprocess
import sys


def test_core_imports_no_ui_libraries():
    code = (
        "import sys; import tts_tui.backends.llamacpp, tts_tui.search.run, tts_tui.search.strategies, "
        "tts_tui.verify.scorers, tts_tui.verify.answers, tts_tui.session, tts_tui.evaluate, tts_tui.runlog; "
        "bad = [m for m in ('textual', 'rich') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_search_layer_knows_the_protocol_not_a_backend():
    code = (
        "import sys; import tts_tui.search.run, tts_tui.search.strategies, tts_tui.search.stopping; "
        "bad = [m for m in sys.modules if m == 'llama_cpp' or m.startswith(('tts_tui.backends.llamacpp', "
        "'tts_tui.backends.openai', 'tts_tui.verify', 'tts_tui.tui', 'tts_tui.cli'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
