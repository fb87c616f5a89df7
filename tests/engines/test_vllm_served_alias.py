"""`--engine openai --model NAME` where NAME is only a served alias (no hub id, no local dir): prompts are rendered by
the server's own /tokenize, identical to the local rendering; credentials in the endpoint URL reach the server but
no file, row or printed line. A name the server cannot render for fails at once with the fix."""
from __future__ import annotations

import json

import pytest

from paraphrase_pipe.engines import EngineError, create_engine

from .conftest import COMPARED, SERVED_ALIAS, build_cmd, rows

SECRET = "sk-live-0123456789abcdef"


def test_a_served_alias_renders_through_tokenize_and_url_credentials_are_redacted(vllm_server, inprocess_build, tiny_llm_dir, recipe, tmp_path):
    out = tmp_path / "out"
    with_key = vllm_server.url.replace("http://", f"http://pp-user:{SECRET}@")
    proc = build_cmd(out, tiny_llm_dir, recipe, "--endpoint", with_key, "--model", SERVED_ALIAS, "--concurrency", "8")
    keep = [i for i, c in enumerate(COMPARED) if c != "sample_id"]  # the model name is part of the sample id
    answers = {r["chunk_id"]: tuple(r.get(COMPARED[i]) for i in keep) for r in rows(out) if r["chunk_id"]}
    assert answers == {r["chunk_id"]: tuple(r.get(COMPARED[i]) for i in keep) for r in rows(inprocess_build) if r["chunk_id"]}
    provenance = [json.loads(r["provenance"]) for r in rows(out, "shards")]
    assert {p["model"] for p in provenance} == {SERVED_ALIAS}
    assert {p["server"] for p in provenance} == {vllm_server.url.replace("http://", "http://***@")}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["engine_options"]["endpoints"] == [vllm_server.url.replace("http://", "http://***@")]
    leaked = [p for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked and SECRET not in proc.stdout + proc.stderr and (out / "README.md").is_file()


def test_a_name_the_server_cannot_render_for_fails_at_once_with_the_fix(vllm_server):
    engine = create_engine("openai", {"model": "not-served", "endpoints": [vllm_server.url.replace("http://", f"http://pp-user:{SECRET}@")]})
    answered_before = vllm_server.requests_done()
    with pytest.raises(EngineError) as failure:
        engine.generate([{"chunk_id": "c0", "original": "A short text to paraphrase."}])
    engine.close()
    message = str(failure.value)
    assert message.startswith("cannot load the tokenizer of model 'not-served'") and "\n" not in message
    assert f"http://***@127.0.0.1:{vllm_server.port}/tokenize answered HTTP 404" in message and SECRET not in message
    assert message.endswith("name the model's tokenizer with -E model_tokenizer=HUB_ID_OR_LOCAL_DIR")
    assert vllm_server.requests_done() == answered_before  # it fails before any completion request is sent
