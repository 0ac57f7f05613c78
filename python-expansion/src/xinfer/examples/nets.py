"""An example PyTorch module, loaded from a state dict by naming it from Java:
``withModelClass("xinfer.examples.nets:DigitsNet")``."""

import torch
from torch import nn


class DigitsNet(nn.Module):
  """An MLP for 8x8 digit images (64 pixels, 0-16) to 10 class probabilities.

  ``forward`` takes an inference argument: ``temperature`` softens (>1) or
  sharpens (<1) the probabilities.
  """
  def __init__(self, hidden: int = 32):
    super().__init__()
    self.layers = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(),
                                nn.Linear(hidden, 10))

  def forward(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax(self.layers(x / 16.0) / temperature, dim=1)
