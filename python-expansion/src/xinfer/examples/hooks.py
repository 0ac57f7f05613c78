"""Example pre- and post-processing functions, named from Java as
``xinfer.examples.hooks:parse_pixels``, ``xinfer.examples.hooks:decode_png`` and
``xinfer.examples.hooks:log_scores``.

A preprocess function takes one record (a Row: fields are attributes) and
returns its model input; a postprocess function takes one record's model output
(a numpy array) and returns its scores. Both run in the Python worker; an
exception fails only that record (stage ``preprocessing`` or
``postprocessing`` in the dead-letter output).
"""

import numpy as np


def parse_pixels(row) -> np.ndarray:
  """The model input from a text field ``pixels``: numbers separated by spaces."""
  return np.array([float(v) for v in row.pixels.split()], dtype=np.float32)


def decode_png(row) -> np.ndarray:
  """The image input from a BYTES field ``png``: an encoded grayscale image,
  decoded here into an [H, W, 1] float32 array of its gray levels (the digits
  CNN takes 8x8x1, levels 0-16)."""
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(io.BytesIO(row.png)) as image:
    return np.asarray(image.convert('L'), dtype=np.float32)[:, :, np.newaxis]


def log_scores(output: np.ndarray) -> np.ndarray:
  """Probabilities to log-probabilities (floored at 1e-7 so none is -inf)."""
  return np.log(np.clip(output, 1e-7, None))


def stall(row):
  """A hook that never returns (it sleeps for an hour): what the fault tests
  give RunInference to check that --xinferBundleTimeout ends the batch."""
  import time  # pylint: disable=import-outside-toplevel
  time.sleep(3600)
  return row
