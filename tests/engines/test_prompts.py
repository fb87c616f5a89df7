"""Prompt templates: loading, hashing, rendering through a real chat template, the max_tokens rule."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.prompts import PromptRenderer, Template, available_templates, load_template, max_new_tokens


def test_bundled_templates_load_and_carry_the_text_placeholder():
    names = available_templates()
    assert {"faithful-paraphrase", "wrap-wikipedia", "nemotron-cc-wikipedia"} <= set(names)
    for name in names:
        template = load_template(name)
        assert template.id == name and template.version >= 1 and len(template.hash) == 32
        assert "SENTINEL-TEXT" in template.messages("SENTINEL-TEXT")[-1]["content"]


def test_hash_follows_what_reaches_the_model_only(tmp_path):
    text = "id: t\nversion: 1\nsystem: be brief\nuser: 'Rewrite: {text}'\n"
    (tmp_path / "a.yaml").write_text("# a comment\ndescription: one\n" + text)
    (tmp_path / "b.yaml").write_text("description: two\n" + text)
    (tmp_path / "c.yaml").write_text(text.replace("be brief", "be short"))
    (tmp_path / "d.yaml").write_text(text.replace("version: 1", "version: 2"))
    a, b, c, d = (load_template(str(tmp_path / f"{n}.yaml")) for n in "abcd")
    assert a.hash == b.hash
    assert len({a.hash, c.hash, d.hash}) == 3


@pytest.mark.parametrize("content, message", [
    ("user: no placeholder here\n", "containing {text}"),
    ("user: '{text}'\ntemperature: 3\n", "unknown keys: temperature"),
    ("- a list\n", "needs a `user` string"),
    ("user: [unclosed\n", "not valid YAML"),
])
def test_bad_templates_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(EngineError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_template(str(path))


def test_unknown_template_name_lists_the_available_ones():
    with pytest.raises(EngineError, match="faithful-paraphrase"):
        load_template("no-such-template")


def test_rendering_goes_through_the_models_chat_template(tiny_llm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    template = load_template("faithful-paraphrase")
    renderer = PromptRenderer(tokenizer, template)
    ids = renderer.render("The cat sat on the mat.")
    expected = tokenizer.apply_chat_template(template.messages("The cat sat on the mat."), add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(ids) == expected
    assert ids.count(tokenizer.bos_token_id) == 1  # BOS comes from the template once, never added twice
    assert expected.endswith("<|assistant|>\n") and template.system in expected


def test_templates_without_system_role_support_get_it_merged(tiny_llm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                               "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    template = Template(id="t", version=1, system="SYS", user="Rewrite: {text}")
    assert PromptRenderer(tokenizer, template).render_text("abc") == "[user] SYS\n\nRewrite: abc\n[assistant] "


def test_base_models_without_chat_template_get_plain_text(tiny_llm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    tokenizer.chat_template = None
    template = Template(id="t", version=1, system="SYS", user="Rewrite: {text}")
    assert PromptRenderer(tokenizer, template).render_text("abc") == "SYS\n\nRewrite: abc\n\n"


def test_max_tokens_rule():
    assert max_new_tokens(100, 1.3, 32) == 162
    assert max_new_tokens(101, 1.3, 0) == 132  # ceil
    assert max_new_tokens(2048, 1.3, 32, cap=1024) == 1024
