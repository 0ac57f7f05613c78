"""PyTorch: TorchScript files, or state dicts with their ``nn.Module`` class named.

Usage (Java names the framework with ``withFramework(Model.Framework.PYTORCH)``, or it is
detected from the file name)::

  from xinfer.handlers import create_handler
  handler = create_handler('pytorch', '/models/digits-torch-state.pt',
                           feature_field='features',
                           model_class='xinfer.examples.nets:DigitsNet')
"""

import os

import numpy as np

from xinfer.handlers.base import LoadedModel
from xinfer.handlers.base import RowModelHandler
from xinfer.handlers.base import import_function
from xinfer.handlers.base import require_cuda


class PyTorchRowHandler(RowModelHandler):
  """PyTorch: a TorchScript file, or a state dict with the model class named.

  Args (beyond RowModelHandler's):
    model_class: ``package.module:ClassName`` of an ``nn.Module`` subclass, in
      a module the operator allowed (``xinfer.modules``); when given, the file
      is a state dict (``torch.save(model.state_dict(), path)``) loaded into
      ``ClassName(**model_params)``. Without it, the file is TorchScript
      (``torch.jit.save``).
    model_params: keyword arguments for the class's constructor.

  inference_args are keyword arguments of the module's ``forward``. Named
  inputs (``withInput``) are its positional arguments, in the order given; a
  ``forward`` that returns a tuple gives outputs in order, a dict by name. The
  input size is not recorded in PyTorch files (give it with
  ``withInputShape``): a record of the wrong size fails in the
  inference stage with PyTorch's message, and the rest of the batch still runs.
  """
  accepts_inference_args = True
  gpu = True

  def _check_options(self, options):
    unknown = set(options) - {'model_class', 'model_params'}
    if unknown:
      super()._check_options({k: options[k] for k in unknown})
    if options.get('model_params') and not options.get('model_class'):
      raise ValueError(
          'RunInference: model_params were given without model_class; name the '
          "module's class (e.g. 'my_models.nets:DigitsNet').")
    if options.get('model_class'):
      # Fails fast; the class is resolved again on each worker, by name, so the
      # pickled handler holds only the (checked) name.
      self._module_class()

  def _module_class(self):
    from torch import nn
    path = self._options['model_class']
    cls = import_function(path, 'model_class')
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
      raise TypeError(
          f"RunInference: model_class '{path}' is {cls!r}; it must be an "
          'nn.Module subclass (torch.nn.Module).')
    return cls

  def _load(self, path: str) -> LoadedModel:
    import torch
    device = self._device
    require_cuda(device, torch.cuda.is_available(), 'PyTorch')
    if self._options.get('model_class'):
      cls = self._module_class()
      module = cls(**(self._options.get('model_params') or {}))
      module.load_state_dict(
          torch.load(path, map_location=device, weights_only=True))
    else:
      try:
        module = torch.jit.load(path, map_location=device)
      except RuntimeError as e:
        raise ValueError(
            f"RunInference: '{path}' is not a TorchScript file ({e}). For a "
            'state dict, also name the model class (withModelClass in Java).'
        ) from e
    module.to(device)
    module.eval()

    def tensor(value):
      if value.dtype == object:
        raise TypeError(
            'RunInference: a PyTorch model takes numeric tensors; this input '
            'holds text (tokenize it in a preprocess function, or use a Hugging '
            'Face model).')
      if not value.flags.writeable:
        # A block's tensor is a view of the bytes Java sent, which torch must
        # not write to.
        value = np.array(value)
      return torch.from_numpy(np.ascontiguousarray(value)).to(device)

    def predict(x, **kwargs):
      # Named inputs go to forward in the order withInput gives them.
      args = ([tensor(v)
               for v in x.values()] if isinstance(x, dict) else [tensor(x)])
      with torch.no_grad():
        out = module(*args, **kwargs)
      if isinstance(out, list):
        out = tuple(out)
      if isinstance(out, tuple):
        return tuple(o.detach().cpu().numpy() for o in out)
      if isinstance(out, dict):
        return {k: v.detach().cpu().numpy() for k, v in out.items()}
      return out.detach().cpu().numpy()

    return LoadedModel(predict, None, np.float32)


# The registry's entry (xinfer.handlers): the framework's name, its handler, and
# the model file names it is detected from.
FRAMEWORK = 'pytorch'
HANDLER = PyTorchRowHandler
SUFFIXES = ('.pt', '.pth', '.ts')
