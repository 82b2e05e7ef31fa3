from pathlib import Path

import pytest

from vision3d.detect.lion.model import LionConfig

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name,blocks,channels", [("lion_synth_car.yaml", 1, 32), ("lion_retnet_waymo.yaml", 4, 128)])
def test_configs_validate(name, blocks, channels):
    from vision3d.pipeline.config import load_job

    job = load_job(ROOT / "configs" / name)
    model = job.stages[[s.id for s in job.stages].index("train")].params.model if hasattr(job, "stages") else None
    if model is None:  # pragma: no cover - layout guard
        pytest.fail("job has no train stage")
    assert isinstance(model, LionConfig)
    assert len(model.blocks) == blocks and model.channels == channels


def test_bad_lion_config_is_one_line_error():
    from vision3d.detect.registry import parse_detector_config

    with pytest.raises(ValueError, match="lion|channels"):
        parse_detector_config({"name": "lion", "channels": 30, "heads": 4})
    with pytest.raises(ValueError, match="unknown key 'model.blockz'"):
        parse_detector_config({"name": "lion", "blockz": []})
