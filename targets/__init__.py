"""Runtime adapters (ExecuTorch, Core ML, TFLite): one module per runtime, the same ``export`` shape."""
