"""Issue 18: chat templates rendered here for servers without /apply-template (vLLM, SGLang):
ChatML by name, or the model's own from a .jinja file, a tokenizer_config.json or a GGUF."""

from __future__ import annotations

import json

import pytest

from openai_standin import Standin
from tts_tui.backends.openai.templates import chatml, checked, renderer
from tts_tui.errors import InputError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6*7?"}]
CHATML_JINJA = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_a_jinja_file_renders_as_chatml_does(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(CHATML_JINJA)
    assert renderer(str(path))(MESSAGES, True) == chatml(MESSAGES, True)
    assert renderer(str(path))(MESSAGES, False) == chatml(MESSAGES, False)


def test_a_tokenizer_config_gives_its_template_and_special_tokens(tmp_path):
    path = tmp_path / "tokenizer_config.json"
    config = {"chat_template": "{{ bos_token }}{{ messages[-1]['content'] }}{{ eos_token }}",
              "bos_token": {"content": "<s>"}, "eos_token": "</s>"}
    path.write_text(json.dumps(config))
    assert renderer(str(path))(MESSAGES, True) == "<s>What is 6*7?</s>"
    path.write_text(json.dumps({**config, "add_bos_token": True}))
    # a tokenizer that adds BOS: the server adds it when it tokenizes, so the text leaves it out
    assert renderer(str(path))(MESSAGES, True) == "What is 6*7?</s>"


def test_the_gguf_of_the_model_gives_the_prompt_the_engine_renders(tiny_model, tiny_path):
    # SmolLM2's BOS is <|im_start|>, which its template writes and its tokenizer does not add
    assert renderer(str(tiny_path))(MESSAGES, True) == tiny_model.render_chat(MESSAGES)


def test_bad_templates_are_one_line(tmp_path):
    with pytest.raises(InputError, match="neither chatml nor a file"):
        renderer(str(tmp_path / "missing.jinja"))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    with pytest.raises(InputError, match="does not parse"):
        checked(str(broken))
    raising = tmp_path / "raising.jinja"
    raising.write_text("{{ raise_exception('only user and assistant roles') }}")
    with pytest.raises(InputError, match="only user and assistant roles"):
        checked(str(raising))
    empty = tmp_path / "tokenizer_config.json"
    empty.write_text("{}")
    with pytest.raises(InputError, match="no chat_template"):
        checked(str(empty))
    assert checked("chatml") == "chatml" and checked(None) is None


def test_a_server_without_a_template_runs_with_one_from_a_file(tmp_path):
    from tts_tui.search.protocol import SearchParams
    from tts_tui.session import RemoteSolver

    path = tmp_path / "t.jinja"
    path.write_text(CHATML_JINJA)
    with Standin(templates=False) as s:  # no /apply-template, as vLLM
        with pytest.raises(InputError, match="--template"):
            RemoteSolver(s.url, "standin").solve("What is 6*7?", "majority", SearchParams(n=2, budget=400))
        solver = RemoteSolver(s.url, "standin", template=checked(str(path)))
        result, _ = solver.solve("What is 6*7?", "majority", SearchParams(n=2, budget=400, max_steps=8))
        assert result.answer == "42"
        # the capability probes asked the server for a template twice; the solve never did
        assert sum("messages" in b for b in s.bodies) == 2
