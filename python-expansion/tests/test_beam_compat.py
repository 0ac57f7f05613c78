"""Fails, naming the hook, when the installed Beam no longer has what
xinfer.beam_compat reaches into (see CONTRIBUTING.md, "Upgrading Beam")."""

from apache_beam.transforms import fully_qualified_named_transform

from xinfer import beam_compat
from xinfer import metrics


def test_every_beam_hook_finds_its_target():
  assert beam_compat.problems() == [], (
      'Beam internals xinfer relies on changed; follow CONTRIBUTING.md '
      '"Upgrading Beam"')


def test_the_block_path_reports_beams_run_inference_metrics_by_their_names():
  assert beam_compat.beam_run_inference_metric_names() == sorted(
      metrics.BEAM_COUNTERS + metrics.BEAM_DISTRIBUTIONS)


def test_the_exact_allowlist_refuses_a_name_a_glob_would_match():
  cls = fully_qualified_named_transform.FullyQualifiedNamedTransform
  original = cls.__dict__['_check_allowed']
  try:
    beam_compat.install_exact_allowlist(['xinfer.transforms.RowInference'])
    cls._check_allowed('xinfer.transforms.RowInference')
    try:
      cls._check_allowed('xinfer.transforms.RowInference*')
    except ValueError as e:
      assert 'not on the allowlist' in str(e)
    else:
      raise AssertionError('a wildcard name was allowed')
  finally:
    cls._check_allowed = original
