"""The registry (xinfer.handlers): framework detection and the factory."""

import csv
import hashlib
import os
import pickle
import re
import sys
import time

import apache_beam as beam
import numpy as np
import pytest

import xinfer_digits as digits
from xinfer import handlers
from xinfer import modules
from xinfer import transforms

from handler_fakes import FakeHandler, explode, fake, outcome, rows, run  # pylint: disable=unused-import
from handler_fakes import restore_allowlist  # pylint: disable=unused-import


@pytest.mark.parametrize('name, framework', [
    ('m.keras', 'tensorflow'),
    ('m.pt', 'pytorch'),
    ('m.pth', 'pytorch'),
    ('m.joblib', 'sklearn'),
    ('m.pkl', 'sklearn'),
    ('m.onnx', 'onnx'),
])
def test_framework_is_detected_from_the_name(name, framework):
  assert handlers.detect_framework('/models/' + name) == framework


def test_undetectable_framework_says_how_to_name_it(tmp_path):
  with pytest.raises(ValueError,
                     match='cannot tell the framework.*withFramework'):
    handlers.detect_framework(str(tmp_path / 'model.bin'))


def test_unknown_framework_lists_the_known_ones():
  with pytest.raises(ValueError,
                     match="unknown framework 'caffe'.*onnx, pytorch, sklearn"):
    handlers.create_handler('caffe', 'm', feature_field='f')
