"""Every shipped pipeline YAML loads, validates and round-trips; mistakes give clear messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from ragmed.config import PipelineConfig, list_pipelines, load_pipeline
from ragmed.errors import ConfigError, ModelNotFoundError

PIPES = sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPES, ids=[p.stem for p in PIPES])
def test_shipped_pipeline_loads_and_round_trips(path):
    cfg = load_pipeline(path)
    again = PipelineConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    import yaml

    assert PipelineConfig.from_dict(yaml.safe_load(cfg.to_yaml())).to_dict() == cfg.to_dict()


def test_named_pipelines():
    assert {"default", "radiology", "pathology", "ophthalmology"} <= set(list_pipelines())
    assert load_pipeline("default").name == "default"
    with pytest.raises(ConfigError, match="no pipeline named 'nope'"):
        load_pipeline("nope")


@pytest.mark.parametrize("data, message", [
    ({"encoders": {"image": {"name": "no-such-encoder"}}}, "unknown encoder 'no-such-encoder'"),
    ({"index": {"batch_size": 0}}, "index.batch_size"),
    ({"retrieval": {"fusion": "magic"}}, "retrieval.fusion"),
    ({"generatr": {}}, "generatr: unknown field"),
])
def test_mistakes_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_dict(data, source="x.yaml")


def test_missing_weights_reported_on_use_with_remedy():
    cfg = load_pipeline("radiology")
    from ragmed.encoders import create_encoder

    spec = cfg.encoders.image
    with pytest.raises(ModelNotFoundError) as e:
        create_encoder(spec.name, role="image", **{**spec.params, "path": cfg.resolve_path(spec.params["path"])})
    assert "b16_400m.pt" in str(e.value)


def test_unknown_encoder_parameter_named_at_load():
    with pytest.raises(ConfigError, match="encoder 'unimed-clip' has no parameter.*model.*it takes:.*arch"):
        PipelineConfig.from_dict({"encoders": {"image": {"name": "unimed-clip", "params": {"model": "x"}}}})
