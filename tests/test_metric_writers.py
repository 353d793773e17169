"""Metric writers: JSON lines read back, TensorBoard events, a no-op writer off process 0, idempotent close."""
import json

import jax
import numpy as np
import pytest

from lai_jax import metric_writers


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_events(path):
    """Event protos of a TensorBoard file (TFRecord framing: length, its crc, data, data crc)."""
    import struct
    from tensorboardX.proto.event_pb2 import Event
    data, at, out = path.read_bytes(), 0, []
    while at < len(data):
        (n,) = struct.unpack("<Q", data[at:at + 8])
        out.append(Event.FromString(data[at + 12:at + 12 + n]))
        at += 12 + n + 4
    return out


def test_default_writer_appends_json_lines_and_tensorboard_events(tmp_path):
    w = metric_writers.create_default_writer(tmp_path)
    w.write_hparams({"lr": 1e-4, "model": {"dropout": 0.1, "dims": (8, 16)}, "name": "x"})
    w.write_scalars(1, {"loss": np.float32(2.5), "steps_per_s": 3})
    w.write_scalars(2, {"dev/ner_micro_f1": jax.numpy.asarray(0.25)})
    w.close()
    w.close()  # idempotent
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [{"hparams": {"lr": 1e-4, "model.dropout": 0.1, "model.dims": [8, 16], "name": "x"}},
                    {"step": 1, "loss": 2.5, "steps_per_s": 3.0},
                    {"step": 2, "dev/ner_micro_f1": 0.25}]
    # A resumed run continues the same file.
    w = metric_writers.create_default_writer(tmp_path)
    w.write_scalars(3, {"loss": 1.0})
    w.flush()
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1] == {"step": 3, "loss": 1.0}
    w.close()
    pytest.importorskip("tensorboardX")
    # In write order: file names end in a per-process counter that sorts as text ("...9" after "...10").
    files = (tmp_path / "tensorboard").iterdir()
    events = sorted((e for f in files for e in read_events(f)), key=lambda e: e.wall_time)
    loss = [(e.step, v.simple_value) for e in events for v in e.summary.value if v.tag == "loss"]
    assert loss == [(1, 2.5), (3, 1.0)]
    assert any(v.tag == "_hparams_/experiment" for e in events for v in e.summary.value)


def test_no_writes_off_process_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda *a, **k: 1)
    w = metric_writers.create_default_writer(tmp_path)
    assert isinstance(w, metric_writers.NoOpWriter)
    w.write_hparams({"lr": 1.0})
    w.write_scalars(1, {"loss": 1.0})
    w.flush()
    w.close()
    w.close()
    assert list(tmp_path.iterdir()) == []


def test_writing_after_close_fails_loudly(tmp_path):
    w = metric_writers.JsonlWriter(tmp_path / "m.jsonl")
    w.close()
    w.flush()  # harmless after close
    with pytest.raises(ValueError, match="closed"):
        w.write_scalars(1, {"loss": 1.0})
