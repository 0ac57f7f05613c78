"""Rows in blocks (``xinfer.blocks``): blocks built here as Java's RowBlocks
builds them, run through the block DoFn and through RowInference(packed=True)."""

import base64
import typing

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders import RowCoder
from apache_beam.coders.coder_impl import create_InputStream
from apache_beam.coders.coder_impl import create_OutputStream
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.typehints.schemas import schema_from_element_type

from handler_fakes import fake
from xinfer_bench import measure as bench
from xinfer import blocks
from xinfer import convert
from xinfer import handlers
from xinfer import transforms


class Rec(typing.NamedTuple):
  id: np.int64
  features: typing.Optional[typing.Sequence[np.float32]]


SCHEMA = schema_from_element_type(Rec)
SCHEMA_B64 = base64.b64encode(SCHEMA.SerializeToString()).decode()


def make_block(records, dtype='<f4'):
  """A block as RowBlocks.PackFn makes it: width -1 when the features differ."""
  out = create_OutputStream()
  impl = RowCoder(SCHEMA).get_impl()
  for r in records:
    impl.encode_to_stream(r, out, True)
  lengths = {None if r.features is None else len(r.features) for r in records}
  regular = None not in lengths and len(lengths) == 1
  features = (np.asarray([r.features for r in records], dtype=dtype).tobytes()
              if regular else b'')
  return beam.Row(count=len(records),
                  width=lengths.pop() if regular else -1,
                  features=features,
                  rows=out.get(),
                  timestamps=np.arange(len(records), dtype='<i8').tobytes())


def recs(n, width=3):
  return [Rec(i, [float(i)] * width) for i in range(n)]


def run(handler, block, dead_letter=True):
  fn = blocks.BlockInference(handler, SCHEMA_B64, 'float32', None, dead_letter,
                             'failures', transforms.failure_error)
  fn.setup()
  out = list(fn.process(block))
  failures = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
  [predictions
   ] = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
  return predictions, failures


def scores(block):
  return np.frombuffer(block.scores, '<f4').reshape(block.count,
                                                    block.width).tolist()


def skipped(block):
  return np.frombuffer(block.skipped, '<i4').tolist()


def test_a_regular_block_runs_as_one_tensor(tmp_path, monkeypatch):
  handler = fake(tmp_path)
  monkeypatch.setattr(handler, 'run_inference',
                      lambda *a, **k: pytest.fail('went record by record'))
  block = make_block(recs(3))
  predictions, failures = run(handler, block)
  assert failures == []
  assert scores(predictions) == [[0.0], [3.0], [6.0]]
  assert np.frombuffer(predictions.classes, '<i8').tolist() == [0, 0, 0]
  assert skipped(predictions) == []
  assert predictions.model_id == 'fake'
  # Rows and timestamps come back untouched for Java to rebuild the output.
  assert predictions.rows == block.rows
  assert predictions.timestamps == block.timestamps


def test_a_record_of_another_length_fails_alone_with_its_usual_message(
    tmp_path):
  block = make_block(recs(2) + [Rec(9, [1.0, 2.0])] + recs(1))
  assert block.width == -1
  predictions, failures = run(fake(tmp_path), block)
  assert skipped(predictions) == [2]
  assert scores(predictions)[:2] == [[0.0], [3.0]]
  [failure] = failures
  assert failure.stage == handlers.CONVERSION
  assert failure.input.id == 9
  assert 'id=9' in failure.error_message
  assert 'has 2 values' in failure.error_message


def test_a_null_feature_array_fails_alone(tmp_path):
  predictions, failures = run(fake(tmp_path),
                              make_block([Rec(4, None)] + recs(2)))
  assert skipped(predictions) == [0]
  assert [f.stage for f in failures] == [handlers.CONVERSION]
  assert 'is null' in failures[0].error_message


def test_a_batch_the_model_refuses_goes_record_by_record(tmp_path):
  block = make_block(recs(2) + [Rec(7, [13.0, 0.0, 0.0])])
  predictions, failures = run(fake(tmp_path), block)
  assert skipped(predictions) == [2]
  assert [(f.stage, f.error_message) for f in failures
          ] == [(handlers.INFERENCE, 'the model cannot take 13')]


def test_nan_is_rejected_per_record_and_fails_the_run_without_dead_letter(
    tmp_path):
  block = make_block(recs(1) + [Rec(5, [1.0, float('nan'), 1.0])])
  predictions, failures = run(fake(tmp_path), block)
  assert skipped(predictions) == [1]
  assert failures[0].stage == handlers.CONVERSION
  with pytest.raises(convert.RecordError, match=r'withFailures\(\)'):
    run(fake(tmp_path), block, dead_letter=False)


def test_packed_row_inference_in_a_pipeline(tmp_path):
  bench.prepare(str(tmp_path))
  x = bench.rows(5)
  records = [Rec(i, x[i].tolist()) for i in range(5)]
  block = make_block(records)
  inference = transforms.RowInference(model_uri=str(tmp_path / 'identity.onnx'),
                                      packed=True,
                                      input_schema=SCHEMA_B64,
                                      feature_dtype='float32')

  def unpack(out):
    impl = RowCoder(SCHEMA).get_impl()
    stream = create_InputStream(out.rows)
    ids = [impl.decode_from_stream(stream, True).id for _ in range(out.count)]
    return list(zip(ids, scores(out), [out.model_id] * out.count))

  with TestPipeline() as p:
    out = (p
           | beam.Create([block]).with_output_types(
               beam.typehints.row_type.RowTypeConstraint.from_fields(
                   list(blocks.IN_FIELDS)))
           | inference
           | beam.FlatMap(unpack))
    assert_that(
        out, equal_to([(i, x[i].tolist(), 'identity.onnx') for i in range(5)]))


def test_packed_needs_a_schema_and_no_hooks(tmp_path):
  with pytest.raises(ValueError, match='packed blocks need input_schema'):
    transforms.RowInference(model_uri=str(tmp_path), packed=True)
