"""Rows in blocks (``xinfer.blocks``): blocks built here as Java's RowBlocks
builds them, run through the block DoFn and through RowInference(packed=True):
one feature field and scores, then several named inputs and declared outputs
with the example models set-up trains (``xinfer_digits.shaped``), checked
against their plain-Python references and against the record-by-record path."""

import base64
import json
import os
import typing

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders import RowCoder
from apache_beam.coders.coder_impl import create_InputStream
from apache_beam.coders.coder_impl import create_OutputStream
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.typehints.schemas import schema_from_element_type

import xinfer_digits as digits
from handler_fakes import fake
from xinfer_bench import measure as bench
from xinfer_digits import shaped
from xinfer import blocks
from xinfer import convert
from xinfer import handlers
from xinfer import metrics
from xinfer import transforms


class Rec(typing.NamedTuple):
  id: np.int64
  features: typing.Optional[typing.Sequence[np.float32]]


class Digit(typing.NamedTuple):
  """A digit as ModelExamplesIT sends it: pixels, an 8x8 grid, the ink count."""
  id: np.int64
  pixels: typing.Optional[typing.Sequence[np.float32]]
  grid: typing.Sequence[typing.Sequence[np.float32]]
  inked: np.int64


def b64(row_type):
  return base64.b64encode(
      schema_from_element_type(row_type).SerializeToString()).decode()


def make_block(records, row_type=Rec, fields=(('features', '<f4'), )):
  """A block as RowBlocks.PackFn makes it: each field's values as one tensor
  with the per-row shape, and the rows without those fields; no tensors when
  a value is null or the rows' shapes differ, and whole rows."""
  shapes, tensors = [], []
  for field, dtype in fields:
    values = [getattr(r, field) for r in records]
    try:
      arrays = [np.asarray(v, dtype=dtype) for v in values if v is not None]
    except ValueError:  # ragged
      arrays = []
    if len(arrays) < len(values) or len({a.shape for a in arrays}) != 1:
      shapes, tensors = [], []
      break
    shapes.append(list(arrays[0].shape))
    tensors.append(np.stack(arrays).tobytes())
  schema = schema_from_element_type(row_type)
  if tensors:
    rest = blocks.rest_schema(schema, [field for field, _ in fields])
    impl = RowCoder(rest).get_impl()
    rest_type = blocks.row_type_of(rest)
    rows = [
        rest_type(**{f.name: getattr(r, f.name)
                     for f in rest.fields}) for r in records
    ]
  else:
    impl, rows = RowCoder(schema).get_impl(), records
  out = create_OutputStream()
  for r in rows:
    impl.encode_to_stream(r, out, True)
  return beam.Row(count=len(records),
                  rows=out.get(),
                  timestamps=np.arange(len(records), dtype='<i8').tobytes(),
                  shapes=shapes,
                  tensors=tensors)


def unpack(block, layout):
  """The output tensors by name, as Java's UnpackFn reads them: per record, a
  list (arrays) or a number; None for a skipped record."""
  skipped = set(np.frombuffer(block.skipped, '<i4').tolist())
  out = {}
  for tensor, shape, data in zip(layout.outputs, block.shapes, block.tensors):
    values = np.frombuffer(data, dtype=tensor.dtype)
    count = int(block.count)
    if len(shape) == tensor.rank:
      each = [tuple(shape)] * count
    else:
      each = [
          tuple(shape[i * tensor.rank:(i + 1) * tensor.rank])
          for i in range(count)
      ]
    column, offset = [], 0
    for i, s in enumerate(each):
      size = int(np.prod(s))
      value = values[offset:offset + size].reshape(s)
      offset += size
      column.append(None if i in skipped else value.tolist())
    assert offset == values.size
    out[tensor.name] = column
  return out


def block_fn(handler, row_type=Rec, dead_letter=True, feature_field='features'):
  """The block DoFn as RowInference(packed=True) makes it, set up."""
  fields = convert.schema_fields(row_type)
  handler.bind_schema(fields)
  layout = blocks.Layout.of(fields, feature_field, handler.named_inputs,
                            handler.outputs)
  fn = blocks.BlockInference(handler, b64(row_type), layout, None, dead_letter,
                             'failures', transforms.failure_error)
  fn.setup()
  return fn, layout


def run(handler, block, dead_letter=True, row_type=Rec):
  fn, layout = block_fn(handler, row_type, dead_letter)
  out = list(fn.process(block))
  failures = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
  [predictions
   ] = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
  return predictions, failures, layout


def recs(n, width=3):
  return [Rec(i, [float(i)] * width) for i in range(n)]


def scores(block):
  return np.frombuffer(block.tensors[0], '<f4').reshape(block.count,
                                                        -1).tolist()


def skipped(block):
  return np.frombuffer(block.skipped, '<i4').tolist()


def no_record_by_record(monkeypatch, handler):
  monkeypatch.setattr(handler, 'run_inference',
                      lambda *a, **k: pytest.fail('went record by record'))


# --- one feature field, scores ---------------------------------------------


def test_a_regular_block_runs_as_one_tensor(tmp_path, monkeypatch):
  handler = fake(tmp_path)
  no_record_by_record(monkeypatch, handler)
  block = make_block(recs(3))
  assert block.shapes == [[3]]
  predictions, failures, layout = run(handler, block)
  assert failures == []
  assert layout.outputs == blocks.DEFAULT_OUTPUTS
  assert predictions.shapes == [[1], []]
  assert unpack(predictions, layout) == {
      'scores': [[0.0], [3.0], [6.0]],
      'predicted_class': [0, 0, 0]
  }
  assert skipped(predictions) == []
  assert predictions.model_id == 'fake'
  # Rows, timestamps and input tensors come back untouched for Java to make
  # the output Rows of; the rows without the feature field, which crossed once.
  assert predictions.rows == block.rows
  assert predictions.timestamps == block.timestamps
  assert predictions.input_shapes == block.shapes
  assert predictions.input_tensors == block.tensors
  rest = blocks.rest_schema(schema_from_element_type(Rec), ['features'])
  assert [f.name for f in rest.fields] == ['id']
  assert blocks.decode_rows(RowCoder(rest).get_impl(), block.rows, 3) == [(0, ),
                                                                          (1, ),
                                                                          (2, )]


def test_a_record_of_another_length_fails_alone_with_its_usual_message(
    tmp_path):
  block = make_block(recs(2) + [Rec(9, [1.0, 2.0])] + recs(1))
  assert block.tensors == []
  predictions, failures, _ = run(fake(tmp_path), block)
  assert skipped(predictions) == [2]
  assert scores(predictions)[:2] == [[0.0], [3.0]]
  [failure] = failures
  assert failure.stage == handlers.CONVERSION
  assert failure.input.id == 9
  assert 'id=9' in failure.error_message
  assert 'has 2 values' in failure.error_message


def test_a_null_feature_array_fails_alone(tmp_path):
  predictions, failures, _ = run(fake(tmp_path),
                                 make_block([Rec(4, None)] + recs(2)))
  assert skipped(predictions) == [0]
  assert [f.stage for f in failures] == [handlers.CONVERSION]
  assert 'is null' in failures[0].error_message


def test_a_batch_the_model_refuses_goes_record_by_record(tmp_path):
  block = make_block(recs(2) + [Rec(7, [13.0, 0.0, 0.0])])
  assert block.tensors != []
  predictions, failures, _ = run(fake(tmp_path), block)
  assert skipped(predictions) == [2]
  assert [(f.stage, f.error_message) for f in failures
          ] == [(handlers.INFERENCE, 'the model cannot take 13')]
  # The failure holds the whole record: its rest and its tensor fields.
  assert (failures[0].input.id,
          failures[0].input.features) == (7, [13.0, 0.0, 0.0])
  assert scores(predictions)[:2] == [[0.0], [3.0]]
  assert predictions.input_tensors == block.tensors


def test_nan_is_rejected_per_record_and_fails_the_run_without_dead_letter(
    tmp_path):
  block = make_block(recs(1) + [Rec(5, [1.0, float('nan'), 1.0])])
  predictions, failures, _ = run(fake(tmp_path), block)
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
                                      input_schema=b64(Rec))

  def decode(out):
    impl = RowCoder(
        blocks.rest_schema(schema_from_element_type(Rec),
                           ['features'])).get_impl()
    stream = create_InputStream(out.rows)
    ids = [impl.decode_from_stream(stream, True).id for _ in range(out.count)]
    return list(zip(ids, scores(out), [out.model_id] * out.count))

  p = TestPipeline()
  out = (p
         | beam.Create([block]).with_output_types(blocks.IN_TYPE)
         | inference
         | beam.FlatMap(decode))
  assert_that(out,
              equal_to([(i, x[i].tolist(), 'identity.onnx') for i in range(5)]))
  result = p.run()
  result.wait_until_finish()
  # The model id of the block's predictions, counted under it.
  counters = result.metrics().query(MetricsFilter().with_namespace(
      metrics.NAMESPACE))['counters']
  assert {
      c.key.metric.name: c.committed
      for c in counters
      if c.key.metric.name.startswith(metrics.PREDICTIONS_BY_MODEL_PREFIX)
  } == {
      metrics.predictions_by_model('identity.onnx'): 5
  }


def test_packed_needs_a_schema_and_no_hooks(tmp_path):
  with pytest.raises(ValueError, match='packed blocks need input_schema'):
    transforms.RowInference(model_uri=str(tmp_path), packed=True)


def test_a_java_half_of_another_version_is_refused_with_the_fix(tmp_path):
  # Java halves before blocks of several tensors sent feature_dtype.
  with pytest.raises(ValueError, match='different versions: re-run'):
    transforms.RowInference(model_uri=str(tmp_path),
                            packed=True,
                            input_schema=b64(Rec),
                            feature_dtype='float32')
  old = beam.typehints.row_type.RowTypeConstraint.from_fields([
      ('count', np.int64), ('width', np.int64), ('features', bytes),
      ('rows', bytes), ('timestamps', bytes)
  ])
  with pytest.raises(ValueError, match='blocks from Java have fields .*width'):
    blocks.check_block_type(old)
  fields = convert.schema_fields(Rec)
  layout = blocks.Layout.of(fields, 'features', (), ())
  block = make_block(recs(2))
  with pytest.raises(ValueError, match='has 2 tensors; this Python version'):
    blocks.tensors_of(
        beam.Row(count=2,
                 rows=block.rows,
                 timestamps=block.timestamps,
                 shapes=block.shapes * 2,
                 tensors=block.tensors * 2), layout)


def test_text_does_not_cross_in_blocks():
  fields = [('id', np.int64), ('phrase', str)]
  text = convert.bind_inputs(
      fields, convert.parse_inputs([{
          'name': 'text',
          'field': 'phrase'
      }]))
  with pytest.raises(ValueError,
                     match="input field 'phrase' is str; it cannot cross"):
    blocks.Layout.of(fields, 'features', text, ())
  label = convert.parse_outputs([{'name': 'label', 'type': 'str'}])
  with pytest.raises(ValueError, match="output 'label' is str"):
    blocks.Layout.of([('id', np.int64), ('x', typing.Sequence[np.float32])],
                     'x', (), label)


def test_outputs_of_several_shapes_cross_with_each_records_shape():
  tensor = blocks.Tensor('embedding', 'float32', 1)
  shape, data = blocks.pack([np.ones(2), None, np.zeros(3)], tensor)
  assert shape == [2, 0, 3]
  assert np.frombuffer(data, '<f4').tolist() == [1, 1, 0, 0, 0]
  shape, data = blocks.pack([np.ones(2), None], tensor)
  assert shape == [2]
  assert np.frombuffer(data, '<f4').tolist() == [1, 1, 0, 0]
  shape, data = blocks.pack([1, 2, None], blocks.Tensor('n', 'int64', 0))
  assert shape == [] and np.frombuffer(data, '<i8').tolist() == [1, 2, 0]


# --- named inputs and declared outputs, with the example models -------------

PIXELS_AND_INK = [{
    'name': 'pixels',
    'field': 'pixels'
}, {
    'name': 'ink',
    'field': 'inked'
}]
DIGIT_AND_PROBABILITIES = [{
    'name': 'digit',
    'type': 'int64'
}, {
    'name': 'probabilities',
    'type': 'array<float32>'
}]
CNN_INPUT = [{'name': 'images', 'field': 'grid', 'shape': [8, 8, 1]}]
CNN_OUTPUTS = [{
    'name': 'probabilities',
    'type': 'array<float32>'
}, {
    'name': 'embedding',
    'type': 'array<float32>'
}]
# The fields Java packs for each model: its inputs' fields, in order.
TWO_INPUT_FIELDS = (('pixels', '<f4'), ('inked', '<i8'))
CNN_FIELDS = (('grid', '<f4'), )


def digit_records(n, start=0):
  features, _ = digits.load_digits()
  return [
      Digit(i, features[i].tolist(), features[i].reshape(8, 8).tolist(),
            int(shaped.ink(features[i:i + 1])[0]))
      for i in range(start, start + n)
  ]


def reference(digits_dir, name):
  with open(os.path.join(digits_dir, f'{name}.reference.jsonl')) as f:
    return [json.loads(line) for line in f]


def two_input(digits_dir, outputs=None):
  return handlers.create_handler(None,
                                 os.path.join(digits_dir, shaped.TWO_INPUT),
                                 feature_field='features',
                                 inputs=PIXELS_AND_INK,
                                 outputs=outputs or DIGIT_AND_PROBABILITIES)


def cnn(digits_dir):
  return handlers.create_handler(None,
                                 os.path.join(digits_dir, shaped.CNN),
                                 feature_field='features',
                                 inputs=CNN_INPUT,
                                 outputs=CNN_OUTPUTS)


def record_by_record(handler, records):
  """What the same handler gives without blocks: each record's declared
  outputs (lists and numbers), or its Failure."""
  handler.bind_schema(convert.schema_fields(Digit))
  results = handler.run_inference(records, handler.load_model())
  return [r.inference for r in results]


def assert_close(got, want):
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_two_named_inputs_and_two_declared_outputs_run_as_tensors(
    digits_dir, monkeypatch):
  records = digit_records(40)
  block = make_block(records, Digit, TWO_INPUT_FIELDS)
  assert block.shapes == [[64], []]
  handler = two_input(digits_dir)
  no_record_by_record(monkeypatch, handler)
  predictions, failures, layout = run(handler, block, row_type=Digit)
  assert failures == [] and skipped(predictions) == []
  assert [(t.name, t.element, t.rank)
          for t in layout.inputs] == [('pixels', 'float32', 1),
                                      ('inked', 'int64', 0)]
  assert predictions.shapes == [[], [10]]
  assert predictions.model_id == shaped.TWO_INPUT
  out = unpack(predictions, layout)
  expected = reference(digits_dir, shaped.TWO_INPUT)[:40]
  assert out['digit'] == [e['digit'] for e in expected]
  assert_close(out['probabilities'], [e['probabilities'] for e in expected])
  # The same values as record by record, to the bit.
  singly = record_by_record(two_input(digits_dir), records)
  assert out == {
      name: [r[name] for r in singly]
      for name in ('digit', 'probabilities')
  }


def test_a_cnn_takes_a_grid_reshaped_to_its_image_as_one_tensor(
    digits_dir, monkeypatch):
  records = digit_records(40)
  block = make_block(records, Digit, CNN_FIELDS)
  handler = cnn(digits_dir)
  no_record_by_record(monkeypatch, handler)
  predictions, failures, layout = run(handler, block, row_type=Digit)
  assert failures == []
  assert [t.name for t in layout.inputs] == ['grid']
  assert predictions.shapes == [[10], [16]]
  out = unpack(predictions, layout)
  expected = reference(digits_dir, shaped.CNN)[:40]
  for name in ('probabilities', 'embedding'):
    assert_close(out[name], [e[name] for e in expected])
  # The same values as record by record, to the bit.
  singly = record_by_record(cnn(digits_dir), records)
  assert out == {
      name: [r[name] for r in singly]
      for name in ('probabilities', 'embedding')
  }


def check_one_bad_row(digits_dir, make_handler, fields, records, bad,
                      expected_name):
  """The block of ``records`` whose record ``bad`` does not fit: the others
  get the reference's outputs, the bad one fails alone with what it gets
  without blocks (stage, error type and message)."""
  predictions, failures, layout = run(make_handler(),
                                      make_block(records, Digit, fields),
                                      row_type=Digit)
  assert skipped(predictions) == [bad]
  [failure] = failures
  [alone] = [
      r for r in record_by_record(make_handler(), records)
      if isinstance(r, handlers.Failure)
  ]
  assert (failure.stage, failure.error_type,
          failure.error_message) == (alone.stage, alone.error_type,
                                     alone.message)
  assert failure.input.id == records[bad].id
  out = unpack(predictions, layout)
  expected = reference(digits_dir, expected_name)
  for i, record in enumerate(records):
    if i == bad:
      assert all(column[i] is None for column in out.values())
      continue
    for name, column in out.items():
      assert_close(column[i], expected[record.id][name])
  return failure


def test_a_row_of_another_length_falls_back_and_fails_alone(digits_dir):
  records = digit_records(12)
  records[5] = records[5]._replace(pixels=records[5].pixels[:63])
  assert make_block(records, Digit, TWO_INPUT_FIELDS).tensors == []
  failure = check_one_bad_row(digits_dir, lambda: two_input(digits_dir),
                              TWO_INPUT_FIELDS, records, 5, shaped.TWO_INPUT)
  assert failure.stage == handlers.CONVERSION
  assert "field 'pixels' has 63 values; the model input (None, 64)" in (
      failure.error_message)


def test_a_nan_in_a_packed_block_falls_back_and_fails_alone(digits_dir):
  records = digit_records(12)
  records[3] = records[3]._replace(pixels=[float('nan')] +
                                   records[3].pixels[1:])
  assert make_block(records, Digit, TWO_INPUT_FIELDS).tensors != []
  failure = check_one_bad_row(digits_dir, lambda: two_input(digits_dir),
                              TWO_INPUT_FIELDS, records, 3, shaped.TWO_INPUT)
  assert failure.stage == handlers.CONVERSION
  assert '[0] is nan' in failure.error_message


def test_a_grid_of_another_shape_falls_back_and_fails_alone(digits_dir):
  records = digit_records(12)
  records[7] = records[7]._replace(grid=records[7].grid[:7])
  assert make_block(records, Digit, CNN_FIELDS).tensors == []
  failure = check_one_bad_row(digits_dir, lambda: cnn(digits_dir), CNN_FIELDS,
                              records, 7, shaped.CNN)
  assert failure.stage == handlers.CONVERSION
  assert "field 'grid' has 56 values; the model input (None, 8, 8, 1) needs 64" in (
      failure.error_message)


def test_an_output_that_does_not_fit_its_declared_type_fails_each_record(
    digits_dir):
  wrong = [{'name': 'digit', 'type': 'array<int64>'}]
  records = digit_records(4)
  predictions, failures, _ = run(two_input(digits_dir, wrong),
                                 make_block(records, Digit, TWO_INPUT_FIELDS),
                                 row_type=Digit)
  assert skipped(predictions) == [0, 1, 2, 3]
  singly = record_by_record(two_input(digits_dir, wrong), records)
  assert [(f.stage, f.error_message) for f in failures] == [(r.stage, r.message)
                                                            for r in singly]
  assert failures[0].stage == handlers.POSTPROCESSING
  assert "output 'digit' is a int64 scalar" in failures[0].error_message


def test_packed_named_inputs_in_a_pipeline(digits_dir):
  records = digit_records(30)
  block_rows = [
      make_block(records[i:i + 8], Digit, TWO_INPUT_FIELDS)
      for i in range(0, 30, 8)
  ]
  inference = transforms.RowInference(
      model_uri=os.path.join(digits_dir, shaped.TWO_INPUT),
      packed=True,
      input_schema=b64(Digit),
      inputs=json.dumps(PIXELS_AND_INK),
      outputs=json.dumps(DIGIT_AND_PROBABILITIES))
  layout = blocks.Layout.of(
      convert.schema_fields(Digit), 'features',
      convert.bind_inputs(convert.schema_fields(Digit),
                          convert.parse_inputs(PIXELS_AND_INK)),
      convert.parse_outputs(DIGIT_AND_PROBABILITIES))
  expected = reference(digits_dir, shaped.TWO_INPUT)

  def decode(out):
    # The block had tensors: its rows are the rest of each row.
    impl = RowCoder(
        blocks.rest_schema(schema_from_element_type(Digit),
                           [field
                            for field, _ in TWO_INPUT_FIELDS])).get_impl()
    stream = create_InputStream(out.rows)
    ids = [impl.decode_from_stream(stream, True).id for _ in range(out.count)]
    return list(zip(ids, unpack(out, layout)['digit']))

  with TestPipeline() as p:
    out = (p
           | beam.Create(block_rows).with_output_types(blocks.IN_TYPE)
           | inference
           | beam.FlatMap(decode))
    assert_that(out, equal_to([(i, expected[i]['digit']) for i in range(30)]))
