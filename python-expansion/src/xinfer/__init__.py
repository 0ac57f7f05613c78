"""xinfer: Python half of RunInference for Java Beam pipelines."""

__version__ = "0.1.0"
